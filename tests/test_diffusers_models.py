"""A diffusers UNet2DModel + DDPMScheduler pipeline, built tiny here and saved with save_pretrained, loads as a
DDPM; our Algorithm 2 from the same start noise and step noises gives DDPMPipeline's images; the schedule
comes from the scheduler's config, and what our samplers do not implement is refused by name."""
import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

import ddpm
from ddpm.diffusers_models import DiffusersUNet


def tiny_pipeline(folder, **scheduler):
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=50, **scheduler))
    pipe.save_pretrained(folder)
    return pipe


@pytest.mark.parametrize("variance_type, variance", [("fixed_small", "beta_tilde"), ("fixed_large", "beta")])
def test_our_ddpm_sampling_equals_ddpm_pipeline(tmp_path, variance_type, variance):
    pipe = tiny_pipeline(tmp_path / "pipe", variance_type=variance_type, beta_schedule="linear",
                         beta_start=1e-3, beta_end=0.2)
    model = ddpm.load_pretrained(tmp_path / "pipe")
    assert isinstance(model.net, DiffusersUNet) and model.sample_shape == (3, 8, 8) and model.T == 50
    theirs = pipe(batch_size=2, num_inference_steps=50, generator=torch.Generator().manual_seed(0),
                  output_type="np").images                                          # [2, 8, 8, 3] in [0, 1]
    assert model.variance == variance                                              # from the scheduler's variance_type
    ours = ddpm.sample(model, 2, sampler="ddpm", generator=torch.Generator().manual_seed(0))
    ours = ((ours + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)
    fast = ddpm.sample(model, 2, sampler="dpmpp_2m", steps=5, generator=torch.Generator().manual_seed(0))
    assert fast.shape == (2, 3, 8, 8)                                              # every sampler runs on it


def test_a_bare_unet_folder_loads_with_default_schedule_and_the_cosine_one_maps(tmp_path):
    pipe = tiny_pipeline(tmp_path / "pipe", beta_schedule="squaredcos_cap_v2")
    pipe.unet.save_pretrained(tmp_path / "unet_only")
    assert ddpm.load_model(tmp_path / "unet_only").schedule.name == "linear"        # no scheduler/: the defaults
    cosine = ddpm.load_model(tmp_path / "pipe")
    assert cosine.schedule.name == "cosine"
    torch.testing.assert_close(cosine.schedule.betas, pipe.scheduler.betas, atol=1e-6, rtol=1e-5)


def test_what_we_do_not_implement_is_refused_by_name(tmp_path):
    tiny_pipeline(tmp_path / "v", prediction_type="v_prediction")
    with pytest.raises(ValueError, match="prediction_type 'v_prediction' is not supported"):
        ddpm.load_model(tmp_path / "v")
    tiny_pipeline(tmp_path / "lv", variance_type="learned_range")
    with pytest.raises(ValueError, match="variance_type 'learned_range' is not supported"):
        ddpm.load_model(tmp_path / "lv")
    tiny_pipeline(tmp_path / "sq", beta_schedule="scaled_linear")
    with pytest.raises(ValueError, match="beta_schedule 'scaled_linear' is not supported"):
        ddpm.load_model(tmp_path / "sq")
    pipe = tiny_pipeline(tmp_path / "bin")
    pipe.unet.save_pretrained(tmp_path / "bin_unet", safe_serialization=False)     # pickled weights: never loaded
    with pytest.raises(ValueError, match="safetensors only"):
        ddpm.load_model(tmp_path / "bin_unet")
    with pytest.raises(ValueError, match="from another library"):
        ddpm.load_model(tmp_path / "bin").save_pretrained(tmp_path / "out")
