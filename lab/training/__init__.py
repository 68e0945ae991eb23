"""Fine-tuning: LoRA, QLoRA and full training of a vision-language model.

* :mod:`~lab.training.encode` turns records into token ids with the loss on answers only, and
  :mod:`~lab.training.collator` those into batches;
* :mod:`~lab.training.data` builds and checks a run's samples (overlong ones dropped or refused);
* :mod:`~lab.training.mix` mixes several datasets into one run;
* :mod:`~lab.training.setup` freezes parts and adds adapters;
* :mod:`~lab.training.trainer` is the ``transformers.Trainer`` with a lean loss;
* :mod:`~lab.training.scoring` scores answers at every evaluation and keeps the best checkpoint;
* :mod:`~lab.training.metrics` writes ``metrics.jsonl``;
* :mod:`~lab.training.preflight` refuses what this machine cannot train before anything loads;
* :mod:`~lab.training.runner` runs one training start to finish (:func:`run_training`);
* :mod:`~lab.training.grpo` trains from reward functions (:mod:`~lab.training.rewards`) instead of answers;
* :mod:`~lab.training.job` runs it in the app's background thread;
* :mod:`~lab.training.launch` runs it on several GPUs through ``accelerate launch``;
* :mod:`~lab.training.runs` lists and describes run folders.
"""
