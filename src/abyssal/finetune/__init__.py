"""Parameter-efficient fine-tuning on Hugging Face PEFT: LoRA adapters whose target modules are
checked against the real model before anything trains (see :mod:`abyssal.finetune.lora`)."""
