"""Text classification on a Hugging Face model: full, LoRA or frozen-base fine-tuning, with
length-bucketed batches and an adapter lifecycle (see :mod:`.solution`, :mod:`.adapters`)."""
