"""PyTorch's side of bench/train.bench.mjs: the same training step as sdc's step graph, timed.

Run by the benchmark (never alone), with diffusers on PYTHONPATH:
  python3 bench/train-torch.py probe          prints {"torch": ..., "diffusers": ...} or fails
  python3 bench/train-torch.py <job.json>     runs the job, prints one JSON line of results

The job names a diffusers U-Net folder (config.json + diffusion_pytorch_model.safetensors), a
safetensors file with the fixed batch (latents, noise, timesteps, encoder_hidden_states), and for
LoRA one with the initial LoRA factors (PEFT names: <module>.lora_A.weight / .lora_B.weight). Each
step is what diffusers' train_text_to_image does for the ε objective: noisy = add_noise(x0, ε, t),
pred = unet(noisy, t, ctx), loss = mse(pred, ε), backward, AdamW step, zero_grad.
"""
import json
import resource
import sys
import time


def peak_rss_mib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def patch_baddbmm(torch):
    """Some CPU builds of torch 1.13 return NaN from baddbmm(input, a, b, beta=0) for small shapes;
    diffusers' attention processor (torch < 2) calls it with an uninitialised input and beta=0.
    beta=0 means alpha·(a @ b): computed as such, the same work."""
    orig = torch.baddbmm

    def baddbmm(input, batch1, batch2, *, beta=1, alpha=1, out=None):
        if beta == 0:
            return alpha * torch.bmm(batch1, batch2)
        return orig(input, batch1, batch2, beta=beta, alpha=alpha)

    torch.baddbmm = baddbmm


def main():
    arg = sys.argv[1]
    import torch
    if arg == "probe":
        import diffusers
        from diffusers import DDPMScheduler, UNet2DConditionModel  # noqa: F401 (fails here if diffusers cannot load)
        print(json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__}))
        return
    with open(arg) as f:
        job = json.load(f)
    torch.set_num_threads(job["threads"])
    torch.set_num_interop_threads(1)
    rss_start = rss_mib()
    patch_baddbmm(torch)
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from safetensors.torch import load_file

    rss_import = rss_mib()
    t0 = time.perf_counter()
    unet = UNet2DConditionModel.from_pretrained(job["unet"])
    unet.train()
    batch = load_file(job["batch"])
    x0, eps, t, ctx = batch["latents"], batch["noise"], batch["timesteps"], batch["encoder_hidden_states"]
    sched = DDPMScheduler(**job["schedule"])

    if job["lora"]:
        spec = job["lora"]
        init = load_file(job["lora_init"])
        for p in unet.parameters():
            p.requires_grad_(False)
        params = wrap_lora(torch, unet, spec["rank"], spec["alpha"], spec["targets"], init)
    else:
        params = dict(unet.named_parameters())
    o = job["optimizer"]
    opt = torch.optim.AdamW(list(params.values()), lr=job["lr"], betas=tuple(o["betas"]), eps=o["eps"], weight_decay=o["weight_decay"])
    setup_s = time.perf_counter() - t0

    losses, times = [], []
    for k in range(job["warmup"] + job["steps"]):
        ts = time.perf_counter()
        noisy = sched.add_noise(x0, eps, t)
        target = eps
        pred = unet(noisy, t, ctx).sample
        loss = F.mse_loss(pred.float(), target.float(), reduction="mean")
        loss.backward()
        opt.step()
        opt.zero_grad()
        value = loss.item()
        te = time.perf_counter()
        losses.append(value)
        if k >= job["warmup"]:
            times.append(te - ts)
    print(json.dumps({
        "engine": "torch",
        "setupS": setup_s,
        "stepTimesS": times,
        "losses": losses,
        "trainedTensors": len(params),
        "trainedParameters": sum(p.numel() for p in params.values()),
        "rssStartMiB": rss_start,
        "rssImportMiB": rss_import,
        "peakMiB": peak_rss_mib(),
    }))


def wrap_lora(torch, unet, rank, alpha, targets, init):
    """y = W x + b + (alpha / rank) · B(A(x)) on every Linear whose name equals a target or ends with
    '.' + target (PEFT's rule); A and B start from `init`. Returns {PEFT name: parameter}."""

    class LoRALinear(torch.nn.Module):
        def __init__(self, base, a, b):
            super().__init__()
            self.base = base
            self.lora_A = torch.nn.Linear(base.in_features, rank, bias=False)
            self.lora_B = torch.nn.Linear(rank, base.out_features, bias=False)
            self.scale = alpha / rank
            with torch.no_grad():
                self.lora_A.weight.copy_(a)
                self.lora_B.weight.copy_(b)

        def forward(self, x, *args):  # diffusers 0.24 passes a LoRA scale positionally; not used
            return self.base(x) + self.scale * self.lora_B(self.lora_A(x))

    params = {}
    for name, mod in list(unet.named_modules()):
        if not isinstance(mod, torch.nn.Linear):
            continue
        if not any(name == t or name.endswith("." + t) for t in targets):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = unet.get_submodule(parent_name)
        wrapped = LoRALinear(mod, init[f"{name}.lora_A.weight"], init[f"{name}.lora_B.weight"])
        if isinstance(parent, torch.nn.ModuleList) or isinstance(parent, torch.nn.Sequential):
            parent[int(child)] = wrapped
        else:
            setattr(parent, child, wrapped)
        params[f"{name}.lora_A.weight"] = wrapped.lora_A.weight
        params[f"{name}.lora_B.weight"] = wrapped.lora_B.weight
    missing = set(k for k in init if k not in params)
    if missing:
        raise SystemExit(f"LoRA factors with no matching Linear: {sorted(missing)[:3]}")
    return params


if __name__ == "__main__":
    main()
