#!/usr/bin/env python3
"""Train the demo LLaMA model (models/kjv-llama) and its draft model
(models/kjv-llama-draft) on the King James Bible, and evaluate them.

Run on the GPU machine (PyTorch, transformers, tokenizers, safetensors):

    python3 tools/train/prepare_corpus.py     # where `bible` (Debian bible-kjv) exists
    python3 tools/train/train_demo.py         # writes models/ ; see models/README.md

Steps
1. Tokenizer: byte-level BPE (HF `tokenizers`) with the Llama 3 pre-tokenizer (split regex
   + ByteLevel), 8176 BPE entries (the 256 byte symbols included) + 16 Llama-3 special
   tokens = 8192, trained on the training chapters only (min_frequency 2), ignore_merges
   true as in Llama 3. Both models share it.
2. Data: one document per chapter (tools/train/data/chapters.jsonl, see
   prepare_corpus.py) as [<|begin_of_text|>] + tokens + [<|end_of_text|>], all training
   documents concatenated into one stream. A training sequence is <|begin_of_text|>
   followed by CTX-1 tokens from a random offset of that stream (this is also the
   shape of the evaluation windows).
3. Models (HF LlamaForCausalLM, Llama 3 layout: GQA, RoPE theta 500000, SwiGLU, RMSNorm,
   tied embeddings), see TARGET / DRAFT below. AdamW (0.9, 0.95), wd 0.1 on matrices,
   bf16 autocast, grad clip 1.0, linear warmup then cosine to 10%. Each model is trained
   with a few step budgets / dropout rates (SWEEP); the validation books' loss is measured every
   EVAL_EVERY steps and the best checkpoint over all runs is kept.
4. Both models are saved in bfloat16 (model.safetensors) with config.json,
   generation_config.json and the tokenizer files, then reloaded with transformers in
   float32 on the CPU (eager attention) for the held-out evaluation
   (models/eval/perplexity.json, protocol written there), samples and the draft/target
   agreement.

Seeded (torch / data sampling); GPU kernels are not bit-deterministic, so a re-run gives
close, not identical, weights. Wall-clock budgets only cut a sweep short (logged).
"""
import argparse
import json
import math
import os
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))
import llamafmt as lf  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

VOCAB = 8192
N_SPECIAL = 16
CTX = 512          # training sequence length, BOS included
BATCH = 32
EVAL_W = 256       # evaluation window (tokens scored per window)
EVAL_MAX_WINDOWS = 64
EVAL_EVERY = 50
SEED = 20241201

TARGET = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=6,
              num_attention_heads=4, num_key_value_heads=2)
DRAFT = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=2,
             num_attention_heads=2, num_key_value_heads=1)
# (total steps, peak lr, dropout) per run; runs are tried in order while the time budget
# lasts. Dropout is training-only regularisation (forward hooks on the embedding output
# and on every attention / MLP block output, see add_dropout); it is not part of the
# saved model, which is a plain LlamaForCausalLM.
SWEEP = {
    "kjv-llama": dict(model=TARGET, runs=[(500, 2e-3, 0.0), (1000, 2e-3, 0.1),
                                          (2000, 2e-3, 0.2), (3000, 2e-3, 0.3)],
                      budget_s=250.0),
    "kjv-llama-draft": dict(model=DRAFT, runs=[(1200, 3e-3, 0.0), (1200, 3e-3, 0.1),
                                               (2400, 3e-3, 0.1)],
                            budget_s=100.0),
}
WARMUP = 50
SAMPLE_PROMPT = "In the beginning"

LOG = []


def log(*a):
    s = " ".join(str(x) for x in a)
    LOG.append(s)
    print(s, flush=True)


def load_chapters():
    with open(os.path.join(ROOT, "tools", "train", "data", "chapters.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def windows_from_text_ids(ids, bos, w=EVAL_W, max_windows=EVAL_MAX_WINDOWS):
    n = min(max_windows, len(ids) // w)
    return [[bos] + ids[i * w:(i + 1) * w] for i in range(n)]


def model_cfg(arch, tok):
    bos, eot, eotid = (tok.token_to_id(lf.BOS3), tok.token_to_id(lf.EOT3),
                       tok.token_to_id(lf.EOTID3))
    return lf.llama_config(vocab_size=VOCAB, rope_theta=500000.0, rms_norm_eps=1e-5,
                           max_position_embeddings=2048, tie_word_embeddings=True,
                           bos_token_id=bos, eos_token_id=[eot, eotid], torch_dtype="bfloat16",
                           head_dim=arch["hidden_size"] // arch["num_attention_heads"],
                           initializer_range=0.02, rope_scaling=None, **arch)


def new_model(cfg, attn="sdpa"):
    import tempfile
    from transformers import AutoConfig, AutoModelForCausalLM
    d = tempfile.mkdtemp()
    lf.write_json(os.path.join(d, "config.json"), cfg)
    hcfg = AutoConfig.from_pretrained(d)
    try:
        m = AutoModelForCausalLM.from_config(hcfg, attn_implementation=attn)
    except TypeError:
        hcfg._attn_implementation = attn
        m = AutoModelForCausalLM.from_config(hcfg)
    return m.float()  # fp32 master weights whatever config.torch_dtype says


def add_dropout(model, p):
    """Residual-branch dropout for training: F.dropout on the outputs of embed_tokens (input
    side only: the tied LM head uses the weight directly), of every self_attn and of every
    mlp, active only while model.training."""
    if p <= 0:
        return []

    def hook(mod, inp, out):
        if not mod.training:
            return out
        if isinstance(out, tuple):
            return (F.dropout(out[0], p, True),) + tuple(out[1:])
        return F.dropout(out, p, True)
    hs = [model.model.embed_tokens.register_forward_hook(hook)]
    for layer in model.model.layers:
        hs.append(layer.self_attn.register_forward_hook(hook))
        hs.append(layer.mlp.register_forward_hook(hook))
    return hs


@torch.no_grad()
def gpu_eval_loss(model, wins):
    """Mean NLL per scored token over windows (tensor [n, W+1] on the GPU), bf16 autocast."""
    model.eval()
    tot, cnt = 0.0, 0
    for i in range(0, wins.shape[0], 32):
        x = wins[i:i + 32]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                               reduction="sum")
        tot += float(loss)
        cnt += x[:, 1:].numel()
    model.train()
    return tot / cnt


def train_one(name, cfg, steps, lr, dropout, stream, val_wins, test_wins, bos, seed, deadline, curve):
    torch.manual_seed(seed)
    model = new_model(cfg).cuda().train()
    hooks = add_dropout(model, dropout)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=True)
    g = torch.Generator(device="cpu").manual_seed(seed + 1)
    N = stream.numel()
    ar = torch.arange(CTX - 1, device="cuda")
    bos_col = torch.full((BATCH, 1), bos, dtype=torch.long, device="cuda")
    best = (float("inf"), None, -1)
    t0 = time.time()
    step_time = None
    stopped = None
    for step in range(1, steps + 1):
        if step <= WARMUP:
            cur = lr * step / WARMUP
        else:
            p = (step - WARMUP) / max(1, steps - WARMUP)
            cur = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))
        for gr in opt.param_groups:
            gr["lr"] = cur
        off = torch.randint(0, N - (CTX - 1), (BATCH,), generator=g).cuda()
        x = torch.cat([bos_col, stream[off[:, None] + ar[None, :]]], dim=1)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % EVAL_EVERY == 0 or step == steps:
            tl = loss.item()
            vl = gpu_eval_loss(model, val_wins)
            el = time.time() - t0
            curve.append({"run": f"{steps}@{lr:g}/do{dropout:g}", "step": step, "train_loss": round(tl, 4),
                          "valid_loss": round(vl, 4), "lr": cur, "elapsed_s": round(el, 1)})
            log(f"{name} [{steps} steps, lr {lr:g}, dropout {dropout:g}] step {step:5d} train {tl:.4f} valid {vl:.4f} "
                f"({el:.1f}s)")
            if vl < best[0]:
                best = (vl, {k: v.detach().clone() for k, v in model.state_dict().items()}, step)
            if time.time() > deadline:
                stopped = f"time budget reached at step {step}"
                log(f"{name}: {stopped}")
                break
    torch.cuda.synchronize()
    for h in hooks:
        h.remove()
    wall = time.time() - t0
    step_time = wall / step
    model.load_state_dict(best[1])
    tl = gpu_eval_loss(model, test_wins)
    log(f"{name} [{steps} steps, lr {lr:g}, dropout {dropout:g}]: best valid {best[0]:.4f} at step {best[2]}, test "
        f"{tl:.4f} (bf16 GPU), {n_params} params, {wall:.1f}s, {1000 * step_time:.1f} ms/step")
    return {"steps": steps, "lr": lr, "dropout": dropout, "best_valid_loss": best[0], "best_step": best[2],
            "test_loss_gpu_bf16": tl, "wall_s": wall, "ms_per_step": 1000 * step_time,
            "stopped": stopped, "params": n_params}, best[1]


def save_model(out_dir, cfg, state, tok):
    os.makedirs(out_dir, exist_ok=True)
    lf.write_json(os.path.join(out_dir, "config.json"), cfg)
    lf.write_json(os.path.join(out_dir, "generation_config.json"), {
        "bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"],
        "do_sample": True, "temperature": 0.8, "top_p": 0.95, "top_k": 50,
        "transformers_version": lf.TRANSFORMERS_VERSION_TAG})
    names = [n for n, _ in lf.llama_param_shapes(cfg)]
    tensors = {n: state[n].detach().to(torch.bfloat16).cpu().contiguous() for n in names}
    lf.save_weights(tensors, out_dir, n_shards=1)
    lf.write_llama3_tokenizer_files(tok, out_dir, model_max_length=cfg["max_position_embeddings"])


@torch.no_grad()
def cpu_eval(model, wins):
    """Per-window NLL sums (float64 accumulation of float32 log-probs) and argmaxes."""
    sums, argmaxes, logps = [], [], []
    for i in range(0, len(wins), 8):
        x = torch.tensor(wins[i:i + 8])
        lp = torch.log_softmax(model(x[:, :-1]).logits.float(), dim=-1)
        nll = -lp.gather(-1, x[:, 1:, None])[..., 0]
        sums += nll.double().sum(dim=1).tolist()
        argmaxes.append(lp.argmax(-1))
        logps.append(lp)
    return sums, torch.cat(argmaxes), torch.cat(logps)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "models"))
    ap.add_argument("--smoke", action="store_true", help="tiny run to test the script")
    args = ap.parse_args()
    t_all = time.time()
    if args.smoke:
        for v in SWEEP.values():
            v["runs"] = [(s // 50, lr, d) for s, lr, d in v["runs"]][:2]
            v["budget_s"] = 20.0
        globals()["EVAL_EVERY"] = 5
    import transformers
    import tokenizers
    log(f"torch {torch.__version__} transformers {transformers.__version__} tokenizers "
        f"{tokenizers.__version__} cuda {torch.cuda.get_device_name(0)}")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    chapters = load_chapters()
    heldout_text = open(os.path.join(ROOT, "models", "eval", "heldout.txt"), encoding="utf-8").read()
    test_text = "".join(c["text"] for c in chapters if c["split"] == "test")
    assert test_text == heldout_text, "models/eval/heldout.txt does not match the corpus"
    valid_text = "".join(c["text"] for c in chapters if c["split"] == "valid")
    train_docs = [c["text"] for c in chapters if c["split"] == "train"]

    # 1. tokenizer
    t0 = time.time()
    tok = lf.train_llama3_bpe(train_docs, vocab_size=VOCAB, n_special=N_SPECIAL, min_frequency=2)
    t_tok = time.time() - t0
    bos, eot = tok.token_to_id(lf.BOS3), tok.token_to_id(lf.EOT3)
    log(f"tokenizer: {tok.get_vocab_size()} entries, bos {bos} eot {eot} eot_id "
        f"{tok.token_to_id(lf.EOTID3)}, trained in {t_tok:.1f}s")

    # 2. data
    encs = tok.encode_batch(train_docs, add_special_tokens=False)
    stream_np = np.concatenate([np.array([bos] + e.ids + [eot], dtype=np.int64) for e in encs])
    stream = torch.from_numpy(stream_np).cuda()
    val_ids = tok.encode(valid_text, add_special_tokens=False).ids
    test_ids = tok.encode(test_text, add_special_tokens=False).ids
    val_wins = torch.tensor(windows_from_text_ids(val_ids, bos), device="cuda")
    test_wins_l = windows_from_text_ids(test_ids, bos)
    test_wins = torch.tensor(test_wins_l, device="cuda")
    n_train_chars = sum(len(d) for d in train_docs)
    log(f"data: train {len(train_docs)} chapters, {stream.numel()} tokens "
        f"({n_train_chars / stream.numel():.2f} chars/token); valid {len(val_ids)} tokens -> "
        f"{val_wins.shape[0]} windows; test {len(test_ids)} tokens -> {test_wins.shape[0]} windows")

    # 3. training
    results = {"curves": [], "runs": {}}
    for mi, (name, sw) in enumerate(SWEEP.items()):
        cfg = model_cfg(sw["model"], tok)
        t_model = time.time()
        deadline = t_model + sw["budget_s"]
        best_state, best_val, runs, curve = None, float("inf"), [], []
        for ri, (steps, lr, dropout) in enumerate(sw["runs"]):
            done = [r for r in runs if "ms_per_step" in r]
            if done:
                est = done[-1]["ms_per_step"] / 1000 * steps * 1.1
                if time.time() + est > deadline:
                    log(f"{name}: skipping run {steps}@{lr:g}/do{dropout:g} (estimated {est:.0f}s, budget left "
                        f"{deadline - time.time():.0f}s)")
                    runs.append({"steps": steps, "lr": lr, "dropout": dropout,
                                 "skipped": "time budget"})
                    continue
            r, state = train_one(name, cfg, steps, lr, dropout, stream, val_wins, test_wins, bos,
                                 SEED + 100 * mi + ri, deadline + 30, curve)
            runs.append(r)
            if r["best_valid_loss"] < best_val:
                best_val, best_state = r["best_valid_loss"], state
                chosen = (steps, lr, r["best_step"], dropout)
        t_model = time.time() - t_model
        log(f"{name}: chosen run {chosen[0]}@{chosen[1]:g}/do{chosen[3]:g}, step {chosen[2]}, valid {best_val:.4f}; "
            f"training time {t_model:.1f}s")
        results["runs"][name] = {"config": sw["model"], "batch": BATCH, "ctx": CTX,
                                 "warmup": WARMUP, "runs": runs,
                                 "chosen": {"steps": chosen[0], "lr": chosen[1], "dropout": chosen[3],
                                            "best_step": chosen[2], "valid_loss": best_val},
                                 "train_time_s": t_model}
        results["curves"] += [dict(c, model=name) for c in curve]
        save_model(os.path.join(args.out, name), cfg, best_state, tok)
        del best_state
        torch.cuda.empty_cache()

    # 4. evaluation with transformers, float32, CPU
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) - 2))
    try:
        from transformers import AutoTokenizer
        hf_tok = AutoTokenizer.from_pretrained(os.path.join(args.out, "kjv-llama"))
        if hf_tok(heldout_text, add_special_tokens=False)["input_ids"] != test_ids:
            log("CHECK transformers tokenizer differs from tokenizers on heldout.txt")
        for s in ["In the beginning", " leading", "a\n\nb", "<|eot_id|> x", "日本語 😀"]:
            a, b = hf_tok(s)["input_ids"], tok.encode(s).ids
            if a != b:
                log(f"CHECK transformers vs tokenizers on {s!r}: {a} vs {b}")
        log("transformers AutoTokenizer loaded; checked against tokenizers")
    except Exception as e:  # noqa: BLE001
        log(f"CHECK AutoTokenizer failed: {type(e).__name__}: {e}")
    hf_ids = test_ids  # tokenizer.json applied by HF tokenizers (= AutoTokenizer, checked above)
    wins = windows_from_text_ids(hf_ids, bos)
    n_scored = len(wins) * EVAL_W
    evald = {}
    mods = {}
    for name in SWEEP:
        m = lf.load_fp32(os.path.join(args.out, name)).eval()
        lf.check_rotary(m, json.load(open(os.path.join(args.out, name, "config.json"))), log)
        t0 = time.time()
        sums, am, lp = cpu_eval(m, wins)
        tot = float(sum(sums))
        evald[name] = {"window_nll_sums": sums, "total_nll": tot, "tokens": n_scored,
                       "mean_nll": tot / n_scored, "perplexity": math.exp(tot / n_scored),
                       "eval_s": round(time.time() - t0, 2)}
        log(f"{name}: held-out perplexity {math.exp(tot / n_scored):.3f} "
            f"(mean NLL {tot / n_scored:.4f}) over {n_scored} tokens, fp32 CPU")
        mods[name] = (m, am, lp)
    (mt, amt, lpt), (md, amd, lpd) = mods["kjv-llama"], mods["kjv-llama-draft"]
    agree = float((amt == amd).double().mean())
    accept = float(torch.minimum(lpt.exp(), lpd.exp()).sum(-1).double().mean())
    log(f"draft argmax == target argmax on {agree:.4f} of held-out positions; "
        f"mean sum_x min(p_target, p_draft) = {accept:.4f}")

    samples = {}
    p_ids = tok.encode(SAMPLE_PROMPT).ids  # with BOS
    enc = {"input_ids": torch.tensor([p_ids]), "attention_mask": torch.ones(1, len(p_ids), dtype=torch.long)}
    for name, (m, _, _) in mods.items():
        g_out = m.generate(**enc, do_sample=False, max_new_tokens=64, pad_token_id=eot)
        torch.manual_seed(1234)
        s_out = m.generate(**enc, do_sample=True, temperature=0.8, top_p=0.95, top_k=50,
                           max_new_tokens=64, pad_token_id=eot)
        n0 = enc["input_ids"].shape[1]
        samples[name] = {
            "greedy": {"ids": g_out[0, n0:].tolist(),
                       "text": tok.decode(g_out[0, n0:].tolist(), skip_special_tokens=False)},
            "sampled": {"ids": s_out[0, n0:].tolist(),
                        "text": tok.decode(s_out[0, n0:].tolist(), skip_special_tokens=False),
                        "settings": "torch.manual_seed(1234); do_sample=True, temperature=0.8, "
                                    "top_p=0.95, top_k=50, max_new_tokens=64, CPU float32"}}
        log(f"{name} greedy: {SAMPLE_PROMPT!r} -> {samples[name]['greedy']['text']!r}")
        log(f"{name} sampled: {SAMPLE_PROMPT!r} -> {samples[name]['sampled']['text']!r}")

    eval_dir = os.path.join(args.out, "eval")
    os.makedirs(eval_dir, exist_ok=True)
    lf.write_json(os.path.join(eval_dir, "perplexity.json"), {
        "protocol": {
            "text": "models/eval/heldout.txt (the test books' chapters, concatenated, as "
                    "written by tools/train/prepare_corpus.py)",
            "heldout_books": ["Ruth", "Esther", "Jonah", "Titus", "Philemon", "Jude"],
            "tokenize": "ids = tokenizer(text, add_special_tokens=False) with the models' "
                        "tokenizer.json (no BOS, no EOS)",
            "windows": f"non-overlapping windows of W={EVAL_W} ids: window k = "
                       f"ids[k*W:(k+1)*W], k = 0..min({EVAL_MAX_WINDOWS}, len(ids)//W)-1 "
                       "(the remainder is dropped)",
            "input": "each window is fed alone, as [bos_token_id] + window[:-1] (W positions; "
                     "the same as feeding [bos_token_id] + window and ignoring the last "
                     "position's logits); no KV cache shared between windows",
            "score": "NLL of each of the W window tokens given its prefix: "
                     "-log softmax(logits[j])[window[j]] for j = 0..W-1 (logits at position j "
                     "predict window[j]); window_nll_sums[k] = sum over the W tokens",
            "perplexity": "exp(total_nll / tokens), tokens = W * number of windows",
            "reference_runtime": "transformers LlamaForCausalLM loaded with dtype=float32 "
                                 "from the bf16 model.safetensors (bf16 weights upcast exactly), "
                                 "attn_implementation='eager', on the CPU; log-softmax in float32, "
                                 "sums accumulated in float64",
            "W": EVAL_W, "max_windows": EVAL_MAX_WINDOWS, "bos_token_id": bos,
        },
        "heldout_tokens": len(hf_ids), "windows": len(wins), "scored_tokens": n_scored,
        "models": evald,
        "draft_vs_target": {
            "argmax_agreement": agree,
            "mean_overlap_sum_min_p_q": accept,
            "definition": "over all W*windows scored positions of the protocol above: fraction "
                          "where argmax of the draft's logits equals the target's; and the mean "
                          "over positions of sum_x min(p_target(x), p_draft(x)) at temperature 1 "
                          "(the expected acceptance rate of one speculative-sampling step)"},
        "samples": {"prompt": SAMPLE_PROMPT,
                    "prompt_ids": enc["input_ids"][0].tolist(),
                    "note": "transformers generate on the CPU in float32; greedy = "
                            "do_sample=False, max_new_tokens=64, stops at an eos id",
                    "models": samples},
    })
    with open(os.path.join(eval_dir, "heldout_ids.json"), "w", encoding="utf-8") as f:
        json.dump({"ids": hf_ids}, f)
        f.write("\n")
    results["tokenizer"] = {"vocab": VOCAB, "bpe_entries": VOCAB - N_SPECIAL,
                            "special_tokens": N_SPECIAL, "train_s": t_tok,
                            "train_tokens": int(stream.numel()),
                            "chars_per_token": n_train_chars / stream.numel(),
                            "valid_tokens": len(val_ids), "test_tokens": len(test_ids)}
    results["total_s"] = time.time() - t_all
    results["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__,
                           "tokenizers": tokenizers.__version__,
                           "gpu": torch.cuda.get_device_name(0)}
    lf.write_json(os.path.join(eval_dir, "train_log.json"), results)
    log(f"all done in {time.time() - t_all:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
