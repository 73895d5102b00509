"""Stage 2 of text to image on the embedded captioned shapes: latent diffusion steered by text.

Run (after stage 1, the preset shapes_vae):
  jaxdiff train --config shapes_t2i --workdir runs/shapes_t2i \\
      --config.latent.autoencoder=runs/shapes_vae
  jaxdiff txt2img --workdir runs/shapes_t2i --prompt "a red circle left of a blue square"

The UNet2DConditionModel-style UNet denoises the autoencoder's 8x8x4 latents, scaled by their
measured 1/std; a CLIP-architecture text encoder (2 layers, width 64, CLIP's vocabulary) is
trained jointly from scratch; 10% of the captions are dropped to the empty prompt so that
classifier-free guidance works. At the end: prompt_grid.png and guidance_sweep.png.
"""

import ml_collections

from jaxdiff.configs import digits


def get_config():
    config = digits.get_config()
    config.task = "text_to_image"
    config.data.name = "shapes"
    config.data.image_size = 32
    config.data.channels = 3
    config.data.caption_key = "caption"

    # UNet2DCondition's keyword arguments (diffusers' UNet2DConditionModel names).
    config.model = ml_collections.ConfigDict()
    config.model.in_channels = 4
    config.model.out_channels = 4
    config.model.block_out_channels = (64, 128)
    config.model.down_block_types = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    config.model.up_block_types = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
    config.model.layers_per_block = 1
    config.model.heads = 4
    config.model.cross_attention_dim = 64
    config.model.norm_num_groups = 16
    config.model.dtype = "float32"

    # CLIPTextModel's keyword arguments (transformers' CLIPTextConfig names).
    config.text_encoder = ml_collections.ConfigDict()
    config.text_encoder.vocab_size = 49408
    config.text_encoder.hidden_size = 64
    config.text_encoder.intermediate_size = 128
    config.text_encoder.num_hidden_layers = 2
    config.text_encoder.num_attention_heads = 4
    config.text_encoder.max_position_embeddings = 16  # tokens per prompt (BOS, EOS included)
    config.text_encoder.hidden_act = "quick_gelu"
    config.text_encoder.dtype = "float32"

    config.latent = ml_collections.ConfigDict()
    config.latent.autoencoder = ml_collections.config_dict.placeholder(str)  # stage 1's workdir
    config.latent.caption_dropout = 0.1
    config.latent.train_text_encoder = True  # False: a frozen random encoder (a baseline)

    config.train.batch_size = 64
    config.train.num_steps = 2000
    config.train.log_every = 50
    config.train.ema_decay = 0.995
    config.optim.learning_rate = 1e-3
    config.optim.warmup_steps = 100
    config.checkpoint.every_steps = 1000
    config.sampling.method = "ddim"
    config.sampling.num_steps = 25
    config.sampling.guidance_scale = 3.0
    config.sampling.num_samples = 8  # columns (seeds) of prompt_grid.png
    return config
