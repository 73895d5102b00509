"""A jaxdiff-trained text-to-image run (config.task "text_to_image") -> `TextToImage`.

The same parts `generate` takes for a diffusers folder: the run's EMA text encoder and UNet, the
decoder of the autoencoder run it was trained on (`latent.autoencoder`, at the step recorded in
`<workdir>/latent.json`) and the latent scaling factor measured when the run started.
"""

from __future__ import annotations

import jax

from jaxdiff.validation import InputFileNotFoundError


def load_run_text_to_image(workdir, step: int | None = None):
    """Loads a text-to-image run for `jaxdiff.pipelines.text_to_image.generate`.

    Raises InputError for a run of another task, one without a checkpoint or whose autoencoder
    run is gone.
    """
    from jaxdiff import checkpoint as ckpt_lib
    from jaxdiff import training
    from jaxdiff.run_kind import open_run
    from jaxdiff.tasks import latents as latents_lib
    from jaxdiff.tasks.text_to_image import init_params, make_optimizer, text_to_image_model

    workdir, config = open_run(workdir, "text_to_image")
    record = latents_lib.read_latent_record(workdir)
    if record is None:
        raise InputFileNotFoundError(f"{str(workdir)!r} has no {latents_lib.LATENT_FILE}: the "
                                     f"run never started training")
    autoencoder = latents_lib.load_autoencoder(config.latent.autoencoder,
                                               int(record["autoencoder_step"]))
    built = {}

    def make_state(key):
        graphdef, params = init_params(config, key)
        built["graphdef"] = graphdef
        optimizer = make_optimizer(config)
        return training.create_train_state(params, optimizer, key)

    abstract = jax.eval_shape(make_state, jax.random.key(0))
    with ckpt_lib.Checkpointer(workdir, max_to_keep=None, read_only=True) as checkpointer:
        if checkpointer.latest_step() is None:
            raise InputFileNotFoundError(f"no checkpoint in {str(workdir)!r}: train first")
        state, _ = checkpointer.restore(ckpt_lib.abstract_like(abstract), step)
    return text_to_image_model(config, built["graphdef"], state.ema_params, autoencoder,
                               float(record["scaling_factor"]))
