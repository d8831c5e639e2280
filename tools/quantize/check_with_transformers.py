#!/usr/bin/env python3
"""Independent check of checkpoints written by tools/quantize, outside shardserve.

For each quantized model directory: every linear is decoded with the published reference
formulas, written here in torch the way the reference implementations' own torch fallback paths
compute them (AutoGPTQ's QuantLinear: shifts by range(0, 32, bits) of qweight along the input
dimension and of qzeros along the output dimension, zeros + 1 for checkpoint_format "gptq",
W = scales[g_idx] * (q - zeros[g_idx]); AutoAWQ's dequantize_gemm: unpack along the output
dimension, reorder with AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7], (q - z) * scales repeated
over the group). The decoded weights are loaded into transformers' LlamaForCausalLM (float32,
eager attention) and the held-out perplexity is measured with the protocol of
models/eval/perplexity.json (first min(64, n // 256) windows of 256 ids, each fed as [bos] +
window[:-1]). Needs torch, transformers, tokenizers, safetensors (the GPU machine has them).

    python3 tools/quantize/check_with_transformers.py --out results.json DIR [DIR ...]
"""
import argparse
import json
import math
import os
import sys

import torch
from safetensors.torch import load_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]


def gptq_dequant(qweight, qzeros, scales, g_idx, bits, v1):
    mask = (1 << bits) - 1
    wf = torch.arange(0, 32, bits, dtype=torch.int32, device=qweight.device)
    per = 32 // bits
    zeros = torch.bitwise_right_shift(qzeros.unsqueeze(2).expand(-1, -1, per), wf.view(1, 1, -1))
    zeros = torch.bitwise_and(zeros, mask)
    if v1:
        zeros = zeros + 1
    zeros = zeros.reshape(qzeros.shape[0], -1)  # [groups, out]
    weight = torch.bitwise_right_shift(qweight.unsqueeze(1).expand(-1, per, -1), wf.view(1, -1, 1))
    weight = torch.bitwise_and(weight, mask).reshape(-1, qweight.shape[1])  # [in, out]
    g = g_idx.long()
    w = scales.float()[g] * (weight - zeros[g]).float()
    return w.t().contiguous()  # nn.Linear [out, in]


def awq_dequant(qweight, qzeros, scales, bits, group_size):
    shifts = torch.arange(0, 32, bits, device=qweight.device)
    iw = torch.bitwise_right_shift(qweight[:, :, None], shifts[None, None, :]).view(qweight.shape[0], -1)
    iz = torch.bitwise_right_shift(qzeros[:, :, None], shifts[None, None, :]).view(qzeros.shape[0], -1)
    order = torch.arange(iz.shape[-1], dtype=torch.long).view(-1, 32 // bits)[:, AWQ_REVERSE_ORDER].reshape(-1)
    iw = torch.bitwise_and(iw[:, order], (1 << bits) - 1)
    iz = torch.bitwise_and(iz[:, order], (1 << bits) - 1)
    s = scales.float().repeat_interleave(group_size, dim=0)
    iz = iz.repeat_interleave(group_size, dim=0)
    return ((iw - iz).float() * s).t().contiguous()


def decode(model_dir):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    q = cfg.pop("quantization_config")
    sd = load_file(os.path.join(model_dir, "model.safetensors"))
    out = {}
    prefixes = sorted({k[: -len(".qweight")] for k in sd if k.endswith(".qweight")})
    for p in prefixes:
        if q["quant_method"] == "gptq":
            w = gptq_dequant(sd[p + ".qweight"], sd[p + ".qzeros"], sd[p + ".scales"],
                             sd[p + ".g_idx"], q["bits"], q.get("checkpoint_format", "gptq") == "gptq")
        else:
            in_features = sd[p + ".qweight"].shape[0]
            gs = q["group_size"] if q["group_size"] != -1 else in_features
            w = awq_dequant(sd[p + ".qweight"], sd[p + ".qzeros"], sd[p + ".scales"], q["bits"], gs)
        out[p + ".weight"] = w
    for k, v in sd.items():
        if not any(k.startswith(p + ".") for p in prefixes):
            out[k] = v.float()
    return cfg, q, out, len(prefixes)


def perplexity(model, ids, bos, device):
    window = 256
    n = min(64, len(ids) // window)
    total = 0.0
    with torch.no_grad():
        for w in range(n):
            chunk = ids[w * window:(w + 1) * window]
            inp = torch.tensor([[bos] + chunk[:-1]], device=device)
            logits = model(inp).logits[0].float()
            logp = torch.log_softmax(logits, dim=-1)
            tgt = torch.tensor(chunk, device=device)
            total += -logp.gather(1, tgt[:, None]).double().sum().item()
    return math.exp(total / (n * window)), n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--out", default="check_with_transformers.json")
    ap.add_argument("--tokenizer", default=os.path.join(ROOT, "models/kjv-llama"))
    args = ap.parse_args()
    from tokenizers import Tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = Tokenizer.from_file(os.path.join(args.tokenizer, "tokenizer.json"))
    text = open(os.path.join(ROOT, "models/eval/heldout.txt"), encoding="utf-8").read()
    ids = tok.encode(text, add_special_tokens=False).ids
    results = {"transformers": __import__("transformers").__version__, "torch": torch.__version__,
               "device": device, "heldout_ids": len(ids), "models": {}}
    for d in args.dirs:
        cfg, q, sd, nlin = decode(d)
        config = LlamaConfig(**{k: v for k, v in cfg.items() if k not in ("architectures",)})
        config._attn_implementation = "eager"
        model = LlamaForCausalLM(config).float()
        missing, unexpected = model.load_state_dict(sd, strict=False)
        missing = [m for m in missing if not (m == "lm_head.weight" and config.tie_word_embeddings)]
        if config.tie_word_embeddings:
            model.tie_weights()
        model.to(device).eval()
        ppl, n = perplexity(model, ids, cfg["bos_token_id"], device)
        name = os.path.basename(os.path.normpath(d))
        results["models"][name] = {"quantization_config": q, "linears": nlin, "perplexity": ppl,
                                   "windows": n, "missing": missing, "unexpected": unexpected}
        print(f"{name}: {q['quant_method']} {q['bits']}-bit g{q['group_size']}, {nlin} linears, "
              f"transformers perplexity {ppl:.4f} over {n} windows; missing {missing}, "
              f"unexpected {unexpected}", flush=True)
    json.dump(results, open(args.out, "w"), indent=2)


if __name__ == "__main__":
    sys.exit(main())
