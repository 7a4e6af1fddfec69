"""Test stand-in for the AUTOMATIC1111 WebUI ``modules`` package -- NOT the WebUI.

It mirrors A1111 v1.10.1 (tag commit 82a973c0) only where an extension can observe it: the
names and signatures it imports or overrides, the order of script hooks and callbacks, and
the tensors handed over (noise, init latent, masks, sigmas, timesteps). Each module cites the
A1111 ``file:line`` it follows; the code itself was written for these tests.

What it simplifies:
- no UNet, text encoder or real VAE: samplers record their inputs and return a fixed
  function of their start; the VAE is a tiny fixed-weight conv pair; conds are zeros;
- samplers Euler, Euler a, DPM++ 2M, DPM fast, DPM adaptive, DDIM, PLMS, UniPC; schedules
  Automatic, Karras, Exponential; no per-step denoiser/CFG/mask blend (only the final blend);
- RNG on CPU generators only (no "NV" philox, no seed resize);
- img2img: mask binarised/inverted/blurred with PIL, "fill" = mean colour; no "Only masked"
  crop, colour correction or overlays; hires fix: latent upscale only, no ``firstpass_image``;
- UI built with real gradio 3.41 or ``headless_gradio`` but never served; no metadata.ini or
  user ordering of callbacks; API: argument building and a FastAPI app for extension routes
  only (no ``/sdapi`` routes); options in memory, never saved.
"""
