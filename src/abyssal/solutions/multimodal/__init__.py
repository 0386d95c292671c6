"""The multimodal solution: classify samples that bring text, an image and audio."""
