"""Whole generations with pretrained or jaxdiff-trained parts: text -> latents -> image.

- `scheduler_config.sampler_settings(config, method)`: a diffusers scheduler config -> jaxdiff's
  schedule and `sample` options (each diffusers class's defaults; unsupported values refused).
- `text_to_image`: `TextToImage` (the loaded parts: tokenizer, text encoder, UNet, VAE, sampler
  settings) and `generate(...)`, one jitted function from token ids to decoded images.
- `load_text_to_image(folder)`: a diffusers Stable Diffusion folder -> `TextToImage`.
"""
