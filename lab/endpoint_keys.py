"""Where a chat request goes and with which key: provider presets, base URLs, and the key each may get.

Keys stay home: a key from the server's environment is sent only to the base URL it was set
up for (``OPENAI_API_KEY`` to ``OPENAI_BASE_URL``, else to OpenAI; a provider's ``key_env``
to that provider's ``base_url``), so a visitor of a shared app who types another URL cannot
collect the owner's key. A key typed by the person goes where they say; a local server gets
a placeholder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from lab.errors import ConfigError
from lab.paths import PRESETS_DIR, restricted, workspace
from lab.text import Msg
from lab.yaml_files import check_keys, closest, load_yaml_strict

OPENAI_URL = "https://api.openai.com/v1"
OPENAI_KEY_ENV = "OPENAI_API_KEY"
PLACEHOLDER_KEY = "EMPTY"  # what servers that check no key accept
PROVIDER_KEYS = ("title", "base_url", "models", "key_env", "needs_key")
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
# Sent only where OPENAI_API_KEY goes, as the SDK sends them when they are set.
OPENAI_ENV_HEADERS = (("OpenAI-Organization", "OPENAI_ORG_ID"), ("OpenAI-Project", "OPENAI_PROJECT_ID"))


def load_providers() -> dict[str, dict]:
    """Provider presets: ``presets/providers.yaml`` with the workspace's file laid over it.

    A provider names the environment key it may receive, so on a shared deployment the
    workspace's file (visitors' actions write into the workspace) is not read: there the
    providers are the checkout's own file, which is the owner's. The ``openai`` preset follows
    ``OPENAI_BASE_URL`` when it is set, as the ``openai`` SDK does.
    """
    providers: dict[str, dict] = {}
    files = [PRESETS_DIR / "providers.yaml"]
    if not restricted():
        files.append(workspace() / "presets" / "providers.yaml")
    for path in files:
        if not path.is_file():
            continue
        entries = load_yaml_strict(path, ("providers",)).get("providers") or {}
        for name, entry in entries.items():
            if not isinstance(entry, dict) or not entry.get("base_url"):
                raise ConfigError("Provider '{name}' in {path} needs at least a base_url.", name=name, path=path)
            check_keys(entry, PROVIDER_KEYS, f"provider '{name}' in {path}")
            providers[str(name)] = {"title": str(name), "models": [], "needs_key": True, **entry}
    openai = providers.get("openai")
    if openai and os.environ.get("OPENAI_BASE_URL") and same_url(openai["base_url"], OPENAI_URL):
        openai["base_url"] = os.environ["OPENAI_BASE_URL"]
    return providers


def same_url(a: str, b: str) -> bool:
    """Whether two base URLs name the same place: scheme, host, port and path (without a trailing slash)."""
    return _normalized(a) == _normalized(b)


def _normalized(url: str) -> tuple:
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:  # not a port: such a URL matches nothing but itself
        return (url.strip(),)
    return scheme, parts.hostname or "", port, parts.path.rstrip("/")


def is_local(base_url: str) -> bool:
    """Whether the URL points at this machine (such servers usually check no key)."""
    return (urlsplit(base_url.strip()).hostname or "") in LOCAL_HOSTS


def key_homes() -> list[tuple[str, str]]:
    """``(environment variable, the one base URL its key may be sent to)`` for every key the setup knows."""
    homes = [(OPENAI_KEY_ENV, os.environ.get("OPENAI_BASE_URL") or OPENAI_URL)]
    for entry in load_providers().values():
        name = entry.get("key_env")
        if name and name != OPENAI_KEY_ENV:
            homes.append((name, entry["base_url"]))
    return homes


def environment_keys() -> list[str]:
    """Names of the environment variables that hold a key for a service that needs one (never the keys)."""
    names = [OPENAI_KEY_ENV, *(p.get("key_env") for p in load_providers().values() if p.get("needs_key", True))]
    return [name for name in dict.fromkeys(names) if name and os.environ.get(name)]


def choose_key(base_url: str, typed: str = "", provider: dict | None = None) -> str:
    """The key to send to ``base_url``; a ConfigError (one sentence) when no key may be sent there.

    A typed key goes anywhere. A key from the environment goes only to its home (:func:`key_homes`).
    A local server, or a provider that needs no key, gets the placeholder.
    """
    if typed:
        return typed
    homes = [name for name, home in key_homes() if same_url(home, base_url)]
    for name in homes:
        if os.environ.get(name):
            return os.environ[name]
    if is_local(base_url) or (provider is not None and not provider.get("needs_key", True)):
        return PLACEHOLDER_KEY
    sentence = missing_key_sentence(homes[0]) if homes else foreign_url_sentence(base_url)
    raise ConfigError(sentence)  # dynamic template: one of the two sentences above


def missing_key_sentence(env: str = OPENAI_KEY_ENV) -> Msg:
    """What to do when the URL is a key's home but the key is not set."""
    return Msg(
        "No API key: set {env} in the environment, or type a key of your own (the API key box in the "
        "app), or use a local model, which needs none (the model loaded in the app, --local-model on the "
        "command line).",
        env=env,
    )


def foreign_url_sentence(base_url: str) -> Msg:
    """Why a URL no key from the environment belongs to gets none, and how the owner makes it official."""
    return Msg(
        "No API key for {base_url}: keys from the server's environment are sent only to the address they "
        "were set up for, so give a key of your own (the API key box in the app), or, if this server is "
        "yours, set OPENAI_BASE_URL={base_url} so that OPENAI_API_KEY goes there.",
        base_url=base_url,
    )


@dataclass(frozen=True)
class Endpoint:
    """Where chat requests go: a base URL, a model and the key chosen for that URL."""

    base_url: str
    model: str
    api_key: str = field(default=PLACEHOLDER_KEY, repr=False)


def resolve_endpoint(
    provider: str = "", base_url: str = "", model: str = "", api_key: str = "", need_key: bool = True
) -> Endpoint:
    """Fill in the base URL and model from the provider (else ``$OPENAI_BASE_URL``, else OpenAI) and choose the key.

    ``need_key=False`` (a cost estimate, which sends nothing) keeps only a typed key and refuses nothing.
    """
    providers = load_providers() if provider else {}
    if provider and provider not in providers:
        hint = closest(provider, providers)
        raise ConfigError("Unknown provider '{provider}'{hint}.", provider=provider, hint=hint)
    entry = providers.get(provider)
    base_url = base_url or (entry or {}).get("base_url") or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL
    model = model or ((entry or {}).get("models") or [""])[0]
    if not model:
        raise ConfigError("No model given; pick a provider or type a model name (for example gpt-4o-mini).")
    key = choose_key(base_url, api_key, entry) if need_key else api_key
    return Endpoint(base_url, model, key)
