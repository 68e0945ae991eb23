"""Scoring a model's answers: metrics (:mod:`.metrics`), batched runs of the loaded model
(:mod:`.runner`), OpenAI-compatible endpoints (:mod:`.endpoint`) and tables of the results
(:mod:`.report`)."""
