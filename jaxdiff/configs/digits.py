"""Default preset: an unconditional 0.99M-parameter UNet on the embedded 16x16 digits.

Run: `jaxdiff train --workdir runs/digits` (about 8 minutes on an idle 2-core CPU, then
`samples.png`). Self-attention sits at 4x4 and in the middle block only: attention at 8x8 as well
cost ~15% of the step time on a CPU and scored about the same.
What each choice bought, by `python -m benchmarks.sampler_ablation --num 500` (benchmarks/RESULTS.md,
"Digits sample quality"; precision / confident fraction, DDIM 50):
- v-prediction with min-SNR-5 loss weights (Hang et al. 2023) instead of epsilon with uniform
  weights: 0.65 / 0.73 -> 0.73 / 0.78 at the same step time;
- the cosine schedule instead of the linear one: -> 0.77 / 0.82 (the linear schedule leaves a
  16x16 image almost destroyed over most of its timesteps);
- 2000 steps instead of 1500 (the idle machine runs ~4.8 steps/s): -> 0.80 / 0.85;
- sampling with DDIM eta 0.9 (nearly ancestral) instead of eta 0: -> 0.89 / 0.91 (2000 samples:
  precision 0.885, confident 0.908, Frechet 10.9 = 1.06x the real-test floor, recall 0.87); the
  fresh noise of each step corrects the deterministic path's errors, at a cost in Frechet distance.
Every choice is expressible in diffusers (UNet2DModel, DDIMScheduler with "squaredcos_cap_v2").
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # What is trained (jaxdiff.tasks): "pixel_diffusion", "autoencoder" or "text_to_image".
    config.task = "pixel_diffusion"

    config.data = ml_collections.ConfigDict()
    config.data.name = "digits"
    config.data.data_dir = ml_collections.config_dict.placeholder(str)
    config.data.image_size = 16
    config.data.channels = 1
    config.data.random_flip = False
    config.data.worker_count = 0
    # The feature (TFDS) or metadata.jsonl field (folders) holding captions; None: no captions.
    config.data.caption_key = ml_collections.config_dict.placeholder(str)
    # Damaged or unreadable images/records: False stops the run listing them, True leaves them
    # out with a warning (jaxdiff/data/damaged.py).
    config.data.skip_bad_files = False

    config.model = ml_collections.ConfigDict()
    config.model.image_size = config.data.get_ref("image_size")
    config.model.in_channels = config.data.get_ref("channels")
    config.model.base_channels = 16
    config.model.channel_mults = (1, 2, 4)
    config.model.num_res_blocks = 2
    config.model.attention_resolutions = (4,)
    config.model.num_heads = 4
    config.model.dropout = 0.0
    config.model.num_groups = 8
    config.model.num_classes = 0
    config.model.dtype = "float32"
    config.model.remat = False

    config.diffusion = ml_collections.ConfigDict()
    config.diffusion.schedule = "cosine"
    config.diffusion.num_timesteps = 1000
    config.diffusion.rescale_zero_terminal_snr = False
    config.diffusion.prediction_type = "v_prediction"
    config.diffusion.loss_weighting = "min_snr"
    config.diffusion.min_snr_gamma = 5.0
    config.diffusion.label_dropout = 0.1
    # "diffusion" (the DDPM forward process above) or "flow" (flow matching, jaxdiff.flow: the
    # schedule, prediction_type and loss_weighting are then unused). Flow training times u:
    # "uniform" or "logit_normal" (mean, std), then SD3's shift (1: none).
    config.diffusion.objective = "diffusion"
    config.diffusion.flow_time_sampling = "uniform"
    config.diffusion.flow_logit_mean = 0.0
    config.diffusion.flow_logit_std = 1.0
    config.diffusion.flow_shift = 1.0

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 64
    config.train.num_steps = 2000
    config.train.seed = 0
    config.train.log_every = 50
    config.train.ema_decay = 0.995
    config.train.sample_every = 0  # 0: only at the end
    config.train.max_consecutive_nonfinite = 20

    config.optim = ml_collections.ConfigDict()
    config.optim.learning_rate = 2e-3
    config.optim.warmup_steps = 100
    config.optim.end_learning_rate_fraction = 0.05
    config.optim.weight_decay = 0.0
    config.optim.b1 = 0.9
    config.optim.b2 = 0.99
    config.optim.grad_clip_norm = 1.0
    config.optim.accumulation_steps = 1

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every_steps = 500
    config.checkpoint.max_to_keep = 3

    config.sampling = ml_collections.ConfigDict()
    config.sampling.method = "ddim"
    config.sampling.num_steps = 50
    config.sampling.spacing = "trailing"
    config.sampling.eta = 0.9
    config.sampling.num_samples = 64
    config.sampling.batch_size = 256
    config.sampling.guidance_scale = 1.0
    # flow samplers (flow_euler, flow_heun): the static shift of their sigmas (1: none)
    config.sampling.flow_shift = 1.0

    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1
    config.mesh.fsdp = 1
    return config
