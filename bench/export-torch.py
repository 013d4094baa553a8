"""The torch.onnx.export baselines of the graph benchmarks (bench/vae.bench.mjs, bench/unet.bench.mjs).

Run by the benchmarks (never alone), with diffusers 0.24 on PYTHONPATH:
  python3 bench/export-torch.py probe                  prints {"torch": ..., "diffusers": ...} or fails
  python3 bench/export-torch.py vae <dir> [seed]       SD 1.5's AutoencoderKL
  python3 bench/export-torch.py unet <dir> [seed]      SD 1.5's UNet2DConditionModel

Each builds the diffusers module with SD 1.5's config and seeded random weights (torch's default
initialisation after torch.manual_seed(seed)), writes those weights to <dir>/<name>.safetensors
(diffusers' key names, F32) so sdc builds its graphs from the very same numbers, and exports with
torch.onnx.export, opset 17, batch fixed (VAE 1, U-Net 2), height and width dynamic:
  vae:  <dir>/vae_decoder/model.onnx  latent_sample [1, 4, h, w] -> sample (post_quant_conv + decoder)
        <dir>/vae_encoder/model.onnx  sample [1, 3, H, W] -> latent_parameters (encoder + quant_conv)
  unet: <dir>/unet/model.onnx (+ external weights)  sample [2, 4, h, w], timestep [2],
        encoder_hidden_states [2, 77, 768] -> out_sample
Attention is diffusers' AttnProcessor (baddbmm, softmax, bmm): torch 1.13 has no
scaled_dot_product_attention, so AttnProcessor2_0 (the fused form) cannot be exported here.
Prints one JSON line: what was written, parameter counts, seconds taken.
"""
import json
import os
import struct
import sys
import time

SD15_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, act_fn="silu", norm_num_groups=32,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512], sample_size=512, scaling_factor=0.18215,
)
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    only_cross_attention=False, block_out_channels=[320, 640, 1280, 1280], layers_per_block=2, downsample_padding=1,
    mid_block_scale_factor=1, act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=768,
    attention_head_dim=8, use_linear_projection=False, upcast_attention=False,
)


def save_safetensors(path, state):
    """A safetensors file written tensor by tensor (a U-Net's 3.4 GB never sits in memory twice)."""
    names = sorted(state)
    header, offset = {}, 0
    for k in names:
        n = state[k].numel() * 4
        header[k] = {"dtype": "F32", "shape": list(state[k].shape), "data_offsets": [offset, offset + n]}
        offset += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for k in names:
            f.write(state[k].detach().contiguous().float().numpy().tobytes())


def export(module, args, path, input_names, output_names, dynamic_axes):
    import torch
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.onnx.export(module, args, path, input_names=input_names, output_names=output_names,
                      dynamic_axes=dynamic_axes, opset_version=17, do_constant_folding=True)


def vae(out, seed):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    m = AutoencoderKL(**SD15_VAE).eval()
    save_safetensors(os.path.join(out, "vae.safetensors"), m.state_dict())

    class Dec(torch.nn.Module):
        def __init__(self, v):
            super().__init__()
            self.v = v

        def forward(self, z):
            return self.v.decoder(self.v.post_quant_conv(z))

    class Enc(torch.nn.Module):
        def __init__(self, v):
            super().__init__()
            self.v = v

        def forward(self, x):
            return self.v.quant_conv(self.v.encoder(x))

    hw = {2: "height", 3: "width"}
    export(Dec(m), (torch.randn(1, 4, 32, 32),), os.path.join(out, "vae_decoder", "model.onnx"),
           ["latent_sample"], ["sample"], {"latent_sample": hw, "sample": hw})
    export(Enc(m), (torch.randn(1, 3, 256, 256),), os.path.join(out, "vae_encoder", "model.onnx"),
           ["sample"], ["latent_parameters"], {"sample": hw, "latent_parameters": hw})
    return {"parameters": sum(p.numel() for p in m.parameters()), "files": ["vae.safetensors", "vae_decoder/model.onnx", "vae_encoder/model.onnx"]}


def unet(out, seed):
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    m = UNet2DConditionModel(**SD15_UNET).eval()
    save_safetensors(os.path.join(out, "unet.safetensors"), m.state_dict())

    class U(torch.nn.Module):
        def __init__(self, u):
            super().__init__()
            self.u = u

        def forward(self, sample, timestep, ehs):
            return self.u(sample, timestep, encoder_hidden_states=ehs, return_dict=False)[0]

    hw = {2: "height", 3: "width"}
    args = (torch.randn(2, 4, 32, 32), torch.tensor([500.0, 500.0]), torch.randn(2, 77, 768))
    # over 2 GB: torch writes the weights as external files beside model.onnx
    export(U(m), args, os.path.join(out, "unet", "model.onnx"), ["sample", "timestep", "encoder_hidden_states"],
           ["out_sample"], {"sample": hw, "out_sample": hw})
    return {"parameters": sum(p.numel() for p in m.parameters()), "files": ["unet.safetensors", "unet/model.onnx"]}


def main():
    import torch
    if sys.argv[1] == "probe":
        import diffusers
        print(json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__}))
        return
    what, out = sys.argv[1], sys.argv[2]
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    torch.set_grad_enabled(False)
    os.makedirs(out, exist_ok=True)
    t = time.time()
    r = {"vae": vae, "unet": unet}[what](out, seed)
    print(json.dumps({"what": what, "seed": seed, "torch": torch.__version__, "seconds": time.time() - t, **r}))


if __name__ == "__main__":
    main()
