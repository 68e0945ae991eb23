"""Generate the bundled sample dataset ``data/sample/`` (run: ``python data/make_sample.py``).

Sixty small PNG pictures of UI components and charts (10 kinds x 6 variants), each
drawn from a handful of parameters (colour, count, value, orientation). The reference
answers are written from the same parameters, so they are correct by construction:
a one-sentence caption and a JSON "component function" description (the shape of the
project's seed example: 组件名 / 功能 / 描述 / 细节), each in English and Chinese.
Two variant files go beyond captions: ``data_grounding.jsonl`` asks where things are
(boxes of drawn elements, known exactly, in ms-swift's ``objects`` form) and
``data_video.jsonl`` asks about short clips of a progress bar (folders of frames).

The output is deterministic: parameters come from ``random.Random`` seeded with a
string, text is drawn with Pillow's built-in bitmap font (no system font whose
version could change the pixels) and the PNGs carry no timestamps. Running it again
rewrites byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

VARIANTS = 6
PROMPTS = {
    ("caption", "en"): "<image>Describe this UI component in one sentence.",
    ("caption", "zh"): "<image>用一句话描述这个UI组件。",
    ("json", "en"): "<image>Describe this UI component's functions as JSON "
    "with keys component and functions (each with description and details).",
    ("json", "zh"): "<image>用JSON描述这个UI组件的功能，键为组件名和功能（每项含描述和细节）。",
}
# (style, lang) -> file name; data.jsonl is the default set a fresh user trains on.
FILES = {
    ("caption", "en"): "data.jsonl",
    ("caption", "zh"): "data_caption_zh.jsonl",
    ("json", "en"): "data_json_en.jsonl",
    ("json", "zh"): "data_json_zh.jsonl",
}
JSON_KEYS = {"en": ("component", "functions", "description", "details"), "zh": ("组件名", "功能", "描述", "细节")}
GROUNDING_FILE, VIDEO_FILE = "data_grounding.jsonl", "data_video.jsonl"
GROUNDING_PROMPTS = {
    "button_group": "<image>Find the selected button.",
    "slider": "<image>Find the <ref-object>.",
    "form": "<image>Locate every input field and the submit button.",
}
VIDEO_PROMPT = "<video>What happens to the progress bar in this clip?"
# (colour, first %, last %) of each clip; four frames each, 112x56 pixels.
CLIPS = [("blue", 20, 80), ("orange", 90, 30), ("green", 10, 70), ("purple", 80, 20)]

# name -> (RGB, Chinese name); five well-separated hues keep captions easy to learn.
COLORS = {
    "blue": ((59, 130, 246), "蓝色"),
    "green": ((34, 160, 80), "绿色"),
    "orange": ((245, 125, 20), "橙色"),
    "red": ((220, 50, 50), "红色"),
    "purple": ((150, 80, 220), "紫色"),
}
COLOR_NAMES = list(COLORS)
WHITE, LIGHT, MID, DARK = (255, 255, 255), (226, 230, 236), (160, 166, 176), (55, 62, 75)
FONT = ImageFont.load_default_imagefont()


@dataclass
class Answer:
    """The four reference answers of one picture, and the boxes of drawn elements a question can ask for."""

    caption_en: str
    caption_zh: str
    json_en: dict
    json_zh: dict
    boxes: list = field(default_factory=list)  # (phrase, [x1, y1, x2, y2]) in pixels of the picture


def rgb(name: str) -> tuple[int, int, int]:
    return COLORS[name][0]


def zh(name: str) -> str:
    return COLORS[name][1]


def ordinal(n: int) -> str:
    return f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n, 'th') }"


def functions(lang: str, name: str, items: list[tuple[str, list[str]]]) -> dict:
    """A seed-shaped JSON description: component name plus functions with details."""
    comp, funcs, desc, details = JSON_KEYS[lang]
    return {comp: name, funcs: [{desc: d, details: list(ds)} for d, ds in items]}


def answer(en: str, zh_: str, name: tuple[str, str], en_items: list, zh_items: list) -> Answer:
    return Answer(en, zh_, functions("en", name[0], en_items), functions("zh", name[1], zh_items))


def edges(shape: tuple[float, float, float, float]) -> list[float]:
    """The box ``[x1, y1, x2, y2]`` of a shape Pillow drew from (x0, y0) to (x1, y1) inclusive: its pixels' edges."""
    x0, y0, x1, y1 = shape
    return [
        int(v) if float(v).is_integer() else v for v in (round(x0, 1), round(y0, 1), round(x1 + 1, 1), round(y1 + 1, 1))
    ]


def centered_text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, fill=DARK) -> None:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=FONT)
    draw.text((xy[0] - (right - left) / 2, xy[1] - (bottom - top) / 2), text, font=FONT, fill=fill)


def split_percentages(rng: random.Random, n: int) -> list[int]:
    """``n`` multiples of 5, each at least 10, summing to 100, with a single largest."""
    while True:
        cuts = sorted(rng.sample(range(2, 19), n - 1))
        parts = [5 * (b - a) for a, b in zip([0, *cuts], [*cuts, 20])]
        if min(parts) >= 10 and parts.count(max(parts)) == 1:
            return parts


def distinct_max(rng: random.Random, n: int, low: int, high: int) -> list[int]:
    """``n`` integers in [low, high] whose maximum occurs once."""
    while True:
        values = [rng.randint(low, high) for _ in range(n)]
        if values.count(max(values)) == 1:
            return values


# Each kind: draw(rng, i) -> (image, Answer). ``i`` is the variant number (0..5).


def donut_chart(rng: random.Random, i: int):
    n = 3 + i % 3
    names = [COLOR_NAMES[(i + k) % 5] for k in range(n)]
    parts = split_percentages(rng, n)
    top = parts.index(max(parts))
    im = Image.new("RGB", (224, 224), WHITE)
    draw = ImageDraw.Draw(im)
    start = -90.0
    for name, pct in zip(names, parts):
        draw.pieslice((22, 22, 202, 202), start, start + 3.6 * pct, fill=rgb(name))
        start += 3.6 * pct
    draw.ellipse((67, 67, 157, 157), fill=WHITE)
    big, pct = names[top], parts[top]
    centered_text(draw, (112, 112), f"{pct}%")
    return im, answer(
        f"A donut chart with {n} segments; the largest is {big} at {pct}%.",
        f"一个环形图，共{n}个扇区，最大的是{zh(big)}，占{pct}%。",
        ("donut chart", "环形图组件"),
        [
            (
                "Show how a whole splits into parts",
                [f"It has {n} colored segments", f"The largest segment is {big} at {pct}%"],
            ),
            ("Highlight a key value in the center", [f"The center shows {pct}%"]),
        ],
        [
            ("展示整体中各部分的占比", [f"共有{n}个不同颜色的扇区", f"最大的扇区是{zh(big)}，占{pct}%"]),
            ("在中心突出显示关键数值", [f"中心显示{pct}%"]),
        ],
    )


def bar_chart(rng: random.Random, i: int):
    n, vertical, color = 3 + i % 4, i % 2 == 0, COLOR_NAMES[(i + 1) % 5]
    values = distinct_max(rng, n, 2, 9)
    labels = "ABCDEF"[:n]
    best = labels[values.index(max(values))]
    im = Image.new("RGB", (224, 224), WHITE)
    draw = ImageDraw.Draw(im)
    step, unit = 180 / n, 17
    for k, (label, value) in enumerate(zip(labels, values)):
        lo, hi = 26 + k * step + step * 0.2, 26 + (k + 1) * step - step * 0.2
        if vertical:
            draw.rectangle((lo, 200 - unit * value, hi, 200), fill=rgb(color))
            centered_text(draw, ((lo + hi) / 2, 210), label)
            centered_text(draw, ((lo + hi) / 2, 192 - unit * value), str(value))
        else:
            draw.rectangle((24, lo, 24 + unit * value, hi), fill=rgb(color))
            centered_text(draw, (14, (lo + hi) / 2), label)
            centered_text(draw, (32 + unit * value, (lo + hi) / 2), str(value))
    draw.line((22, 200, 206, 200) if vertical else (22, 20, 22, 206), fill=DARK, width=2)
    way_en, way_zh = ("vertical", "纵向") if vertical else ("horizontal", "横向")
    return im, answer(
        f"A {way_en} bar chart with {n} {color} bars; the largest is {best}.",
        f"一个{way_zh}柱状图，共{n}根{zh(color)}柱子，最大的是{best}。",
        ("bar chart", "柱状图组件"),
        [
            (
                "Compare values across categories",
                [f"{n} {way_en} bars labeled A to {labels[-1]}", f"Bar {best} is the largest at {max(values)}"],
            ),
            ("Use bar length to show size", ["Longer bars mean larger values"]),
        ],
        [
            ("比较不同类别的数值", [f"共{n}根{way_zh}柱子，标为A到{labels[-1]}", f"柱子{best}最大，为{max(values)}"]),
            ("用柱子长度表示大小", ["柱子越长数值越大"]),
        ],
    )


def line_chart(rng: random.Random, i: int):
    n, rising, color = 5 + i % 4, i % 2 == 0, COLOR_NAMES[(i + 2) % 5]
    values = [k * 1.4 + rng.uniform(-1.2, 1.2) for k in range(n)]
    values = values if rising else values[::-1]
    low, high = min(values), max(values)
    points = [(24 + k * 176 / (n - 1), 190 - 160 * (v - low) / (high - low)) for k, v in enumerate(values)]
    im = Image.new("RGB", (224, 224), WHITE)
    draw = ImageDraw.Draw(im)
    for y in (30, 83, 137, 190):
        draw.line((20, y, 204, y), fill=LIGHT)
    draw.line(points, fill=rgb(color), width=3)
    for x, y in points:
        draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=rgb(color))
    trend_en, trend_zh = ("rising", "上升") if rising else ("falling", "下降")
    return im, answer(
        f"A line chart with {n} points in {color}; the trend is {trend_en}.",
        f"一个折线图，共{n}个数据点，{zh(color)}，整体呈{trend_zh}趋势。",
        ("line chart", "折线图组件"),
        [
            (
                "Show how a value changes over time",
                [f"{n} points joined by a {color} line", f"The overall trend is {trend_en}"],
            ),
            ("Mark each data point", ["Each point is drawn as a dot"]),
        ],
        [
            ("展示数值随时间的变化", [f"{n}个数据点由{zh(color)}折线连接", f"整体呈{trend_zh}趋势"]),
            ("标出每个数据点", ["每个数据点画成圆点"]),
        ],
    )


def table(rng: random.Random, i: int):
    cols, rows, color = 2 + i % 3, 2 + (i * 2) % 5, COLOR_NAMES[(i + 3) % 5]
    im = Image.new("RGB", (224, 224), WHITE)
    draw = ImageDraw.Draw(im)
    width, height = 200 / cols, min(32, 190 / (rows + 1))
    draw.rectangle((12, 12, 212, 12 + height), fill=rgb(color))
    for c in range(cols):
        centered_text(draw, (12 + (c + 0.5) * width, 12 + height / 2), f"Col {c + 1}", fill=WHITE)
        for r in range(rows):
            y = 12 + (r + 1.5) * height
            centered_text(draw, (12 + (c + 0.5) * width, y), str(rng.randint(10, 99)))
    for r in range(rows + 2):
        draw.line((12, 12 + r * height, 212, 12 + r * height), fill=MID)
    for c in range(cols + 1):
        draw.line((12 + c * width, 12, 12 + c * width, 12 + (rows + 1) * height), fill=MID)
    return im, answer(
        f"A table with {cols} columns and {rows} rows; the header is {color}.",
        f"一个表格，共{cols}列{rows}行，表头为{zh(color)}。",
        ("table", "表格组件"),
        [
            (
                "Organize data in rows and columns",
                [f"{cols} columns and {rows} data rows", "Each cell holds one number"],
            ),
            ("Name the columns with a header", [f"The header row is {color}"]),
        ],
        [
            ("按行和列组织数据", [f"共{cols}列，{rows}行数据", "每个单元格是一个数字"]),
            ("用表头说明每一列", [f"表头行为{zh(color)}"]),
        ],
    )


def button_group(rng: random.Random, i: int):
    n, color = 2 + i % 4, COLOR_NAMES[(i + 4) % 5]
    chosen = rng.randrange(n)
    labels = ["Day", "Week", "Month", "Year", "All"][:n]
    im = Image.new("RGB", (224, 112), WHITE)
    draw = ImageDraw.Draw(im)
    width = 200 / n
    for k, label in enumerate(labels):
        box = (12 + k * width, 38, 12 + (k + 1) * width - 4, 74)
        selected = k == chosen
        draw.rounded_rectangle(box, 6, fill=rgb(color) if selected else LIGHT)
        centered_text(draw, ((box[0] + box[2]) / 2, 56), label, fill=WHITE if selected else DARK)
    nth = ordinal(chosen + 1)
    result = answer(
        f"A button group with {n} buttons; the {nth} is selected in {color}.",
        f"一个按钮组，共{n}个按钮，第{chosen + 1}个被选中，为{zh(color)}。",
        ("button group", "按钮组组件"),
        [
            ("Let the user pick one option", [f"{n} buttons in a row", f"The {nth} button is selected"]),
            ("Show the current choice with color", [f"The selected button is {color}"]),
        ],
        [
            ("让用户从多个选项中选一个", [f"一排{n}个按钮", f"第{chosen + 1}个按钮被选中"]),
            ("用颜色标出当前选项", [f"选中的按钮为{zh(color)}"]),
        ],
    )
    result.boxes = [
        (f"the {color} {labels[chosen]} button", edges((12 + chosen * width, 38, 12 + (chosen + 1) * width - 4, 74)))
    ]
    return im, result


def progress_bar(rng: random.Random, i: int):
    pct, color = 10 * rng.randint(1, 9), COLOR_NAMES[i % 5]
    im = Image.new("RGB", (224, 112), WHITE)
    draw = ImageDraw.Draw(im)
    draw.rounded_rectangle((16, 48, 208, 68), 10, fill=LIGHT)
    draw.rounded_rectangle((16, 48, 16 + 192 * pct / 100, 68), 10, fill=rgb(color))
    centered_text(draw, (112, 30), f"{pct}%")
    return im, answer(
        f"A progress bar at {pct}%, in {color}.",
        f"一个进度条，进度为{pct}%，{zh(color)}。",
        ("progress bar", "进度条组件"),
        [
            ("Show how much of a task is done", [f"The bar is {pct}% full", f"The filled part is {color}"]),
            ("Show the exact progress as text", [f"The label reads {pct}%"]),
        ],
        [
            ("展示任务完成了多少", [f"进度条填充了{pct}%", f"已完成部分为{zh(color)}"]),
            ("用文字显示准确进度", [f"文字显示{pct}%"]),
        ],
    )


def toggle_switch(rng: random.Random, i: int):
    on, color = i % 2 == 0, COLOR_NAMES[(i + 1) % 5]
    label = ["Wi-Fi", "Dark mode", "Sound", "Sync", "Alerts", "Location"][i]
    im = Image.new("RGB", (224, 112), WHITE)
    draw = ImageDraw.Draw(im)
    draw.text((20, 50), label, font=FONT, fill=DARK)
    draw.rounded_rectangle((130, 40, 200, 72), 16, fill=rgb(color) if on else MID)
    knob = 184 if on else 146
    draw.ellipse((knob - 13, 43, knob + 13, 69), fill=WHITE)
    shown = color if on else "gray"
    state_en, state_zh, side_en, side_zh, shown_zh = (
        ("on", "开启", "right", "右", zh(color)) if on else ("off", "关闭", "left", "左", "灰色")
    )
    return im, answer(
        f"A toggle switch that is {state_en}, in {shown}.",
        f"一个开关，当前为{state_zh}状态，{shown_zh}。",
        ("toggle switch", "开关组件"),
        [
            ("Turn a setting on or off", [f"The switch is {state_en}", f"The knob is on the {side_en}"]),
            ("Show the state with color", [f"The track is {shown}"]),
        ],
        [
            ("开启或关闭一项设置", [f"开关当前为{state_zh}", f"圆钮在{side_zh}侧"]),
            ("用颜色表示状态", [f"轨道为{shown_zh}"]),
        ],
    )


def slider(rng: random.Random, i: int):
    value, color = 10 * rng.randint(1, 9), COLOR_NAMES[(i + 2) % 5]
    im = Image.new("RGB", (224, 112), WHITE)
    draw = ImageDraw.Draw(im)
    x = 24 + 176 * value / 100
    draw.rounded_rectangle((24, 54, 200, 60), 3, fill=LIGHT)
    draw.rounded_rectangle((24, 54, x, 60), 3, fill=rgb(color))
    draw.ellipse((x - 9, 48, x + 9, 66), fill=WHITE, outline=rgb(color), width=3)
    centered_text(draw, (x, 34), str(value))
    centered_text(draw, (24, 80), "0")
    centered_text(draw, (200, 80), "100")
    result = answer(
        f"A slider set to {value}, in {color}.",
        f"一个滑块，当前值为{value}，{zh(color)}。",
        ("slider", "滑块组件"),
        [
            ("Pick a value from a range", ["The range is 0 to 100", f"The handle is at {value}"]),
            ("Show the chosen part with color", [f"The filled track is {color}"]),
        ],
        [
            ("在一个范围内选择数值", ["范围是0到100", f"滑块位于{value}"]),
            ("用颜色标出已选部分", [f"已选轨道为{zh(color)}"]),
        ],
    )
    result.boxes = [("slider handle", edges((x - 9, 48, x + 9, 66)))]
    return im, result


def tabs(rng: random.Random, i: int):
    n, color = 3 + i % 3, COLOR_NAMES[(i + 3) % 5]
    active = rng.randrange(n)
    labels = ["Home", "Files", "Shared", "Stats", "Help"][:n]
    im = Image.new("RGB", (224, 112), WHITE)
    draw = ImageDraw.Draw(im)
    width = 200 / n
    draw.line((12, 70, 212, 70), fill=LIGHT, width=2)
    for k, label in enumerate(labels):
        mid = 12 + (k + 0.5) * width
        centered_text(draw, (mid, 52), label, fill=rgb(color) if k == active else DARK)
        if k == active:
            draw.rectangle((mid - width / 2 + 4, 67, mid + width / 2 - 4, 71), fill=rgb(color))
    nth = ordinal(active + 1)
    return im, answer(
        f"A tab bar with {n} tabs; the {nth} is active, in {color}.",
        f"一个标签栏，共{n}个标签，第{active + 1}个为当前标签，{zh(color)}。",
        ("tab bar", "标签栏组件"),
        [
            ("Switch between views", [f"{n} tabs in a row", f"The {nth} tab is active"]),
            ("Mark the active tab", [f"The active tab is underlined in {color}"]),
        ],
        [
            ("在不同页面之间切换", [f"一排{n}个标签", f"第{active + 1}个标签为当前标签"]),
            ("标出当前标签", [f"当前标签下方有{zh(color)}下划线"]),
        ],
    )


def form(rng: random.Random, i: int):
    n, color = 2 + i % 3, COLOR_NAMES[(i + 4) % 5]
    fields = rng.sample(["Name", "Email", "Phone", "City", "Password"], n)
    im = Image.new("RGB", (224, 224), WHITE)
    draw = ImageDraw.Draw(im)
    for k, name in enumerate(fields):
        y = 16 + k * 40
        draw.text((20, y), name, font=FONT, fill=DARK)
        draw.rectangle((20, y + 14, 204, y + 32), outline=MID, width=1)
    y = 24 + n * 40
    draw.rounded_rectangle((20, y, 110, y + 26), 5, fill=rgb(color))
    centered_text(draw, (65, y + 13), "Submit", fill=WHITE)
    boxes = [(f"{name} field", edges((20, 30 + k * 40, 204, 48 + k * 40))) for k, name in enumerate(fields)]
    result = answer(
        f"A form with {n} input fields and a {color} button.",
        f"一个表单，共{n}个输入框和一个{zh(color)}按钮。",
        ("form", "表单组件"),
        [
            ("Collect information from the user", [f"{n} input fields", "Each field has a label above it"]),
            ("Send the entered data", [f"A {color} submit button at the bottom"]),
        ],
        [
            ("收集用户填写的信息", [f"共{n}个输入框", "每个输入框上方有标签"]),
            ("提交填写的数据", [f"底部有一个{zh(color)}提交按钮"]),
        ],
    )
    result.boxes = boxes + [(f"{color} Submit button", edges((20, y, 110, y + 26)))]
    return im, result


KINDS = [donut_chart, bar_chart, line_chart, table, button_group, progress_bar, toggle_switch, slider, tabs, form]


def to_palette(im: Image.Image) -> Image.Image:
    """Store the picture as a lossless palette PNG (the drawing uses only a few flat colours)."""
    colors = [c for _, c in sorted(im.getcolors(256), key=lambda item: item[1])]
    palette = Image.new("P", (1, 1))
    palette.putpalette([v for c in colors for v in c])
    out = im.quantize(palette=palette, dither=Image.Dither.NONE)
    assert out.convert("RGB").tobytes() == im.tobytes(), "palette conversion must be lossless"
    return out


def record(sample_id: str, kind: str, style: str, lang: str, ans: Answer) -> dict:
    text = getattr(ans, f"{style}_{lang}")
    content = text if style == "caption" else json.dumps(text, ensure_ascii=False)
    return {
        "id": sample_id,
        "images": [f"images/{sample_id}.png"],
        "messages": [
            {"role": "user", "content": PROMPTS[(style, lang)]},
            {"role": "assistant", "content": content},
        ],
        "meta": {"labeler": "generator", "kind": kind, "status": "ok"},
    }


def grounding_record(sample_id: str, kind: str, ans: Answer) -> dict:
    """A question about where things are: the phrases and boxes fill ms-swift's placeholders."""
    prompt = GROUNDING_PROMPTS[kind]
    if "<ref-object>" in prompt:  # the phrase is asked for, the answer is the box
        answer_text = "<bbox>"
    else:
        answer_text = "\n".join("<ref-object><bbox>" for _ in ans.boxes)
    return {
        "id": sample_id,
        "images": [f"images/{sample_id}.png"],
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer_text}],
        "objects": {"ref": [ref for ref, _ in ans.boxes], "bbox": [box for _, box in ans.boxes]},
        "meta": {"labeler": "generator", "kind": kind, "status": "ok"},
    }


def progress_frame(color: str, pct: int) -> Image.Image:
    """One frame of a clip: a progress bar at ``pct``, 112x56 pixels."""
    im = Image.new("RGB", (112, 56), WHITE)
    draw = ImageDraw.Draw(im)
    draw.rounded_rectangle((8, 30, 104, 42), 6, fill=LIGHT)
    draw.rounded_rectangle((8, 30, 8 + 96 * pct / 100, 42), 6, fill=rgb(color))
    centered_text(draw, (56, 16), f"{pct}%")
    return im


def write_clips(out: Path) -> list[str]:
    """Write ``videos/clip_NN/frame_K.png`` (four frames each) and return the clips' records as JSON lines."""
    lines = []
    for n, (color, first, last) in enumerate(CLIPS, start=1):
        folder = out / "videos" / f"clip_{n:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(4):
            pct = round(first + (last - first) * k / 3)
            to_palette(progress_frame(color, pct)).save(folder / f"frame_{k}.png", optimize=True)
        way_en = "fills up" if last > first else "empties"
        rec = {
            "id": f"clip_{n:02d}",
            "videos": [f"videos/clip_{n:02d}"],
            "messages": [
                {"role": "user", "content": VIDEO_PROMPT},
                {"role": "assistant", "content": f"The {color} progress bar {way_en} from {first}% to {last}%."},
            ],
            "meta": {"labeler": "generator", "kind": "progress_clip", "status": "ok"},
        }
        lines.append(json.dumps(rec, ensure_ascii=False))
    return lines


def generate(out_dir: str | Path) -> list[str]:
    """Write images/NNNN.png, the JSONL files and the clips' frames into ``out_dir``; return the picture ids."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    lines: dict[tuple[str, str], list[str]] = {key: [] for key in FILES}
    grounding: list[str] = []
    ids = []
    # Variant-major order, so that any first ten samples cover all ten kinds.
    for i in range(VARIANTS):
        for draw_kind in KINDS:
            sample_id = f"{len(ids) + 1:04d}"
            im, ans = draw_kind(random.Random(f"{draw_kind.__name__}:{i}"), i)
            to_palette(im).save(out / "images" / f"{sample_id}.png", optimize=True)
            for style, lang in FILES:
                rec = record(sample_id, draw_kind.__name__, style, lang, ans)
                lines[(style, lang)].append(json.dumps(rec, ensure_ascii=False))
            if ans.boxes:
                grounding.append(json.dumps(grounding_record(sample_id, draw_kind.__name__, ans), ensure_ascii=False))
            ids.append(sample_id)
    for key, name in FILES.items():
        (out / name).write_text("\n".join(lines[key]) + "\n", encoding="utf-8", newline="\n")
    (out / GROUNDING_FILE).write_text("\n".join(grounding) + "\n", encoding="utf-8", newline="\n")
    (out / VIDEO_FILE).write_text("\n".join(write_clips(out)) + "\n", encoding="utf-8", newline="\n")
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description="Regenerate the bundled sample dataset.")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "sample"), help="output folder")
    ids = generate(parser.parse_args().out)
    print(f"wrote {len(ids)} samples")


if __name__ == "__main__":
    main()
