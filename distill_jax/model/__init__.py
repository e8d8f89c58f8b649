"""The student: Flax T5, Hugging Face import/export, tokenizers, jitted decoding."""
