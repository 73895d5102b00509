"""Stage 2 of latent diffusion: text to image on an autoencoder's latents (config.task
"text_to_image").

The parameters are {"unet": the cross-attention UNet (UNet2DConditionModel topology),
"text_encoder": a CLIP-architecture text encoder}, trained jointly from scratch (or, with
latent.train_text_encoder=False, the encoder stays at its random initialisation: a baseline).
One step: z = (mean + std * eps) * scaling_factor from the cached posterior of the batch's images
(`jaxdiff.tasks.latents`); captions are replaced by the empty prompt with probability
latent.caption_dropout (so the model also learns the unconditional prediction that
classifier-free guidance needs); the UNet reads the noisy latent, t and the caption's text states;
the loss is the diffusion loss of config.diffusion. The scaling factor is 1/std of the latents,
measured when the run starts and recorded in `<workdir>/latent.json`.

At the end of training: `prompt_grid.png` (rows: prompts, columns: seeds) and
`guidance_sweep.png` (rows: guidance 1, 2, 3, 5, 7.5; columns: prompts, same seeds), made by the
same one-jit generation as `jaxdiff txt2img` (`jaxdiff.pipelines.text_to_image.generate`).
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import losses, training
from jaxdiff.tasks import latents as latents_lib
from jaxdiff.validation import InputError

GRID_PROMPTS = ("a red circle", "a green square", "a blue triangle", "a yellow circle",
                "a white square")
SWEEP_GUIDANCE = (1.0, 2.0, 3.0, 5.0, 7.5)


def unet_kwargs(config) -> dict:
    return {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in config.model.items()}


def text_kwargs(config) -> dict:
    return dict(config.text_encoder)


def init_params(config, key):
    """((unet graphdef, text graphdef), {"unet": ..., "text_encoder": ...})."""
    from jaxdiff.models.clip_text import init_clip_text
    from jaxdiff.models.unet_condition import init_unet_condition

    unet_key, text_key = jax.random.split(key)
    unet_graphdef, unet_params = init_unet_condition(unet_kwargs(config), unet_key)
    text_graphdef, text_params = init_clip_text(text_kwargs(config), text_key)
    return (unet_graphdef, text_graphdef), {"unet": unet_params, "text_encoder": text_params}


def make_optimizer(config):
    """The run's optimizer; with latent.train_text_encoder=False the text encoder is frozen (no
    updates at all, weight decay included)."""
    frozen = () if config.latent.train_text_encoder else ("text_encoder",)
    return training.make_optimizer(config.optim, config.train.num_steps, frozen=frozen)


class TokenIds:
    """prompts -> int32 ids (N, length) with the CLIP tokenizer shipped with jaxdiff."""

    def __init__(self, length: int):
        from jaxdiff.tokenizer import default_tokenizer

        self.tokenizer, self.length = default_tokenizer(), int(length)

    def __call__(self, prompts) -> np.ndarray:
        return self.tokenizer(list(prompts), max_length=self.length)[0]


def scheduler_config(config) -> dict:
    """The diffusers scheduler config equal to this run's schedule and sampling settings."""
    d, s = config.diffusion, config.sampling
    betas = {"linear": dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02),
             "scaled_linear": dict(beta_schedule="scaled_linear", beta_start=0.00085,
                                   beta_end=0.012),
             "cosine": dict(beta_schedule="squaredcos_cap_v2")}
    if d.schedule not in betas:
        raise InputError(f"diffusion.schedule={d.schedule!r} has no diffusers scheduler "
                         f"equivalent for text-to-image generation; use one of {sorted(betas)}")
    return {"_class_name": "DDIMScheduler", "num_train_timesteps": int(d.num_timesteps),
            **betas[d.schedule], "prediction_type": d.prediction_type,
            "timestep_spacing": s.spacing, "steps_offset": 0, "clip_sample": False,
            "set_alpha_to_one": False, "rescale_betas_zero_snr": bool(d.rescale_zero_terminal_snr)}


def text_to_image_model(config, graphdef, params, autoencoder, scaling_factor: float):
    """The `TextToImage` that `jaxdiff.pipelines.text_to_image.generate` runs, from this run's
    (EMA) parameters and its autoencoder."""
    from jaxdiff.models.autoencoder import decode
    from jaxdiff.models.unet_condition import apply_unet_condition
    from jaxdiff.pipelines.loading import Bound, text_states
    from jaxdiff.pipelines.scheduler_config import sampler_settings
    from jaxdiff.pipelines.text_to_image import TextToImage

    unet_graphdef, text_graphdef = graphdef
    schedule_config = scheduler_config(config)
    levels = len(config.model.block_out_channels)
    return TextToImage(
        tokenize=TokenIds(config.text_encoder.max_position_embeddings),
        encode_text=Bound(text_states, text_graphdef),
        predict=Bound(apply_unet_condition, unet_graphdef),
        decode=Bound(decode, autoencoder.graphdef),
        params={"text_encoder": params["text_encoder"], "unet": params["unet"],
                "vae": autoencoder.params},
        sampler=sampler_settings(schedule_config, config.sampling.method),
        scheduler_config=schedule_config, scaling_factor=float(scaling_factor),
        shift_factor=0.0, latent_channels=autoencoder.latent_channels,
        vae_factor=autoencoder.factor, size_multiple=autoencoder.factor * 2 ** (levels - 1),
        default_size=int(config.data.image_size), name=str(config.preset))


class TextToImageTask:
    """See `jaxdiff.tasks` and the module docstring."""

    def __init__(self, config, workdir=None):
        self.config, self.workdir = config, workdir
        latent = config.latent
        if config.diffusion.objective != "diffusion":
            raise InputError(f"diffusion.objective={config.diffusion.objective!r}: text-to-image "
                             f"runs train the diffusion objective only; set it to 'diffusion'")
        latents_lib.check_autoencoder_run(latent.autoencoder)
        if not 0.0 <= float(latent.caption_dropout) <= 1.0:
            raise InputError(f"latent.caption_dropout must be in [0, 1]; got "
                             f"{latent.caption_dropout!r}")
        self.record = latents_lib.read_latent_record(workdir) if workdir is not None else None
        self.autoencoder = None
        self.cache = None

    def check_data(self, info) -> None:
        """Checks shapes against the autoencoder and encodes the train split (the cache)."""
        from jaxdiff.data.captions import load_captions
        from jaxdiff.data import load_split

        config = self.config
        step = None if self.record is None else int(self.record["autoencoder_step"])
        ae = latents_lib.load_autoencoder(config.latent.autoencoder, step)
        if ae.config.data.channels != config.data.channels:
            raise InputError(f"data.channels={config.data.channels} but the autoencoder "
                             f"{ae.path!r} takes {ae.config.data.channels} channels")
        if config.data.image_size % ae.factor:
            raise InputError(f"data.image_size={config.data.image_size} is not a multiple of "
                             f"the autoencoder's factor {ae.factor}")
        if config.model.in_channels != ae.latent_channels or \
                config.model.out_channels != ae.latent_channels:
            raise InputError(f"model.in_channels / out_channels must equal the autoencoder's "
                             f"latent_channels={ae.latent_channels}; got "
                             f"{config.model.in_channels} / {config.model.out_channels}")
        if config.model.cross_attention_dim != config.text_encoder.hidden_size:
            raise InputError(f"model.cross_attention_dim={config.model.cross_attention_dim} must "
                             f"equal text_encoder.hidden_size={config.text_encoder.hidden_size}")
        images, _ = load_split(config.data, "train")
        mean, logvar = latents_lib.encode_split(ae, images)
        tokenize = TokenIds(config.text_encoder.max_position_embeddings)
        ids = tokenize(load_captions(config.data, "train"))
        scale = latents_lib.latent_scaling_factor(mean, logvar)
        if self.record is not None:
            scale = float(self.record["scaling_factor"])  # as the run started
        self.autoencoder = ae
        self.cache = {"mean": mean, "logvar": logvar, "ids": ids,
                      "empty_ids": tokenize([""])[0], "scaling_factor": scale}
        if self.record is None and self.workdir is not None and jax.process_index() == 0:
            self.record = {"autoencoder": str(config.latent.autoencoder),
                           "autoencoder_step": ae.step, "scaling_factor": scale}
            latents_lib.write_latent_record(self.workdir, self.record)

    def init_train_state(self, config, key):
        init_key, run_key = jax.random.split(key)
        graphdef, params = init_params(config, init_key)
        optimizer = make_optimizer(config)
        return graphdef, optimizer, training.create_train_state(params, optimizer, run_key)

    def make_train_step(self, graphdef, optimizer):
        from jaxdiff.diffusion import q_sample
        from jaxdiff.models.functional import merge_params
        from jaxdiff.models.autoencoder import sample_posterior

        config, cache = self.config, self.cache
        d = config.diffusion
        schedule = training.schedule_from_config(config)
        unet_graphdef, text_graphdef = graphdef
        scale = float(cache["scaling_factor"])
        empty_ids = jnp.asarray(cache["empty_ids"])
        dropout = float(config.latent.caption_dropout)
        train_text = bool(config.latent.train_text_encoder)

        def loss_fn(params, batch, key):
            z_key, t_key, noise_key, drop_key = jax.random.split(key, 4)
            z = sample_posterior(z_key, batch["mean"], batch["logvar"]) * scale
            b = z.shape[0]
            t = jax.random.randint(t_key, (b,), 0, schedule.num_timesteps, dtype=jnp.int32)
            noise = jax.random.normal(noise_key, z.shape, z.dtype)
            drop = jax.random.bernoulli(drop_key, dropout, (b,))
            ids = jnp.where(drop[:, None], empty_ids[None], batch["ids"])
            text_params = params["text_encoder"] if train_text else \
                jax.lax.stop_gradient(params["text_encoder"])
            states = merge_params(text_graphdef, text_params)(ids).last_hidden_state
            output = merge_params(unet_graphdef, params["unet"])(q_sample(schedule, z, t, noise),
                                                                 t, states)
            per_example = losses.diffusion_loss(schedule, output, z, t, noise,
                                                d.prediction_type, d.loss_weighting,
                                                d.min_snr_gamma)
            return jnp.mean(per_example), {}

        return training.make_step_from_loss(loss_fn, optimizer, config)

    def host_batch(self, batch: dict) -> dict:
        index = np.asarray(batch["index"])
        return {"mean": self.cache["mean"][index], "logvar": self.cache["logvar"][index],
                "ids": self.cache["ids"][index]}

    def model(self, graphdef, params):
        return text_to_image_model(self.config, graphdef, params, self.autoencoder,
                                   self.cache["scaling_factor"])

    def _generate(self, model, prompts, guidance: float) -> np.ndarray:
        from jaxdiff.pipelines.text_to_image import generate

        s = self.config.sampling
        return generate(model, list(prompts), num_steps=int(s.num_steps), method=s.method,
                        guidance_scale=guidance, key=int(self.config.train.seed))

    def sample_grid(self, graphdef, params, num: int):
        """Rows: prompts (GRID_PROMPTS and two held-out two-object ones), columns: seeds."""
        from jaxdiff.data.shapes import HELD_OUT_CAPTIONS
        from jaxdiff.viz import image_grid

        prompts = list(GRID_PROMPTS) + list(HELD_OUT_CAPTIONS[:3])
        cols = max(1, num)
        images = self._generate(self.model(graphdef, params),
                                [p for p in prompts for _ in range(cols)],
                                float(self.config.sampling.guidance_scale))
        return image_grid(images, nrow=cols, upscale=2)

    def write_pictures(self, graphdef, params, workdir, metrics_log, step: int,
                       verbose: bool) -> None:
        from jaxdiff.data.shapes import HELD_OUT_CAPTIONS
        from jaxdiff.viz import image_grid, save_png

        num = int(self.config.sampling.num_samples)
        grid = self.sample_grid(graphdef, params, num)
        save_png(grid, workdir / "prompt_grid.png")
        metrics_log.write_image(step, "prompt_grid", grid)
        prompts = list(GRID_PROMPTS) + list(HELD_OUT_CAPTIONS[:3])
        model = self.model(graphdef, params)
        sweep = np.concatenate([self._generate(model, prompts, g) for g in SWEEP_GUIDANCE])
        save_png(image_grid(sweep, nrow=len(prompts), upscale=2), workdir / "guidance_sweep.png")
        (workdir / "prompt_grid.txt").write_text(
            "prompt_grid.png rows (columns: seeds):\n" + "\n".join(prompts) +
            f"\n\nguidance_sweep.png rows: guidance {list(SWEEP_GUIDANCE)}; columns: the "
            f"prompts above in order, same seeds\n")
        if verbose:
            print(f"wrote {workdir / 'prompt_grid.png'} and {workdir / 'guidance_sweep.png'} "
                  f"(prompts in {workdir / 'prompt_grid.txt'})", file=sys.stderr)
