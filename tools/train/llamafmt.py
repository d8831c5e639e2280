"""Helpers shared by tools/train/train_demo.py and tools/fixtures/make_fixtures.py.

They write HuggingFace LLaMA model folders in the classic, hub-style layout
(config.json with top-level `rope_theta` / `rope_scaling`, as the published Llama 2 /
Llama 3.x checkpoints have it), Llama-3 style byte-level BPE tokenizers trained with
HF `tokenizers`, and safetensors weight files (single or sharded with
model.safetensors.index.json).

Needs: tokenizers, safetensors, torch (only on the GPU machine). Importing this module
needs only the standard library.
"""
import json
import math
import os

# The split regex of Llama 3's tokenizer.json (pre_tokenizer Split, behavior Isolated).
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Llama 3's first special tokens, in Llama 3's order (ids 128000.. there; here they follow
# the BPE vocabulary). Further slots are filled with <|reserved_special_token_N|>, N >= 3.
LLAMA3_NAMED_SPECIALS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
]
BOS3, EOT3, EOTID3 = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"

# Meta-Llama-3-Instruct's chat template.
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}")

TRANSFORMERS_VERSION_TAG = "4.45.0"  # written into config.json like hub checkpoints; informational


def llama3_special_tokens(n):
    names = list(LLAMA3_NAMED_SPECIALS[:n])
    k = 3
    while len(names) < n:
        names.append(f"<|reserved_special_token_{k}|>")
        k += 1
    return names


def train_llama3_bpe(texts, vocab_size, n_special, min_frequency=2, ignore_merges=True):
    """Byte-level BPE with the Llama 3 pre-tokenizer. The BPE part gets
    vocab_size - n_special entries (256 byte symbols included); the special tokens follow,
    as in Llama 3. Returns a tokenizers.Tokenizer with exactly vocab_size entries."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - n_special, min_frequency=min_frequency,
                                  show_progress=False, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    n_bpe = tok.get_vocab_size()
    specials = llama3_special_tokens(vocab_size - n_bpe)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False, lstrip=False,
                                       rstrip=False, single_word=False) for s in specials])
    for i, s in enumerate(specials):
        assert tok.token_to_id(s) == n_bpe + i, (s, tok.token_to_id(s), n_bpe + i)
    bos_id = tok.token_to_id(BOS3)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(single=f"{BOS3}:0 $A:0", pair=f"{BOS3}:0 $A:0 {BOS3}:1 $B:1",
                                      special_tokens=[(BOS3, bos_id)]),
    ])
    d = json.loads(tok.to_str())
    d["model"]["ignore_merges"] = bool(ignore_merges)  # as in Llama 3's tokenizer.json
    tok = Tokenizer.from_str(json.dumps(d))
    assert tok.get_vocab_size() == vocab_size, (tok.get_vocab_size(), vocab_size)
    return tok


def write_json(path, obj):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, sort_keys=True)
        f.write("\n")


def write_llama3_tokenizer_files(tok, out_dir, model_max_length=131072):
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"), pretty=True)
    added = {}
    for t in json.loads(tok.to_str())["added_tokens"]:
        added[str(t["id"])] = {"content": t["content"], "lstrip": False, "normalized": False,
                               "rstrip": False, "single_word": False, "special": True}
    write_json(os.path.join(out_dir, "tokenizer_config.json"), {
        "added_tokens_decoder": added,
        "bos_token": BOS3,
        "eos_token": EOT3,
        "chat_template": LLAMA3_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": model_max_length,
        "tokenizer_class": "PreTrainedTokenizerFast",
    })
    write_json(os.path.join(out_dir, "special_tokens_map.json"),
               {"bos_token": BOS3, "eos_token": EOT3})


def llama_config(*, vocab_size, hidden_size, intermediate_size, num_hidden_layers,
                 num_attention_heads, num_key_value_heads, rope_theta, rms_norm_eps,
                 max_position_embeddings, tie_word_embeddings, bos_token_id, eos_token_id,
                 torch_dtype, rope_scaling=None, head_dim=None, initializer_range=0.02):
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "hidden_act": "silu",
        "hidden_size": hidden_size,
        "initializer_range": initializer_range,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": max_position_embeddings,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": num_attention_heads,
        "num_hidden_layers": num_hidden_layers,
        "num_key_value_heads": num_key_value_heads,
        "pretraining_tp": 1,
        "rms_norm_eps": rms_norm_eps,
        "rope_scaling": rope_scaling,
        "rope_theta": float(rope_theta),
        "tie_word_embeddings": tie_word_embeddings,
        "torch_dtype": torch_dtype,
        "transformers_version": TRANSFORMERS_VERSION_TAG,
        "use_cache": True,
        "vocab_size": vocab_size,
    }
    if head_dim is not None:
        cfg["head_dim"] = head_dim
    return cfg


def expected_inv_freq(cfg):
    """RoPE inverse frequencies as the config means them (default or 'llama3' scaling),
    computed independently of transformers, in float64."""
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    theta = cfg["rope_theta"]
    inv = [1.0 / (theta ** (2 * i / hd)) for i in range(hd // 2)]
    rs = cfg.get("rope_scaling")
    if not rs:
        return inv
    assert rs["rope_type"] == "llama3"
    factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    lo_wl, hi_wl = old / lo, old / hi
    out = []
    for f in inv:
        wl = 2 * math.pi / f
        if wl < hi_wl:
            out.append(f)
        elif wl > lo_wl:
            out.append(f / factor)
        else:
            s = (old / wl - lo) / (hi - lo)
            out.append((1 - s) * f / factor + s * f)
    return out


def save_weights(tensors, out_dir, n_shards=1):
    """tensors: dict name -> torch tensor (already in the storage dtype).
    n_shards == 1: model.safetensors; else model-0000k-of-0000n.safetensors + index."""
    from safetensors.torch import save_file
    names = list(tensors.keys())
    if n_shards == 1:
        save_file({k: tensors[k].contiguous() for k in names},
                  os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
        return ["model.safetensors"]
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    shards, cur, acc = [], [], 0
    for k in names:  # split in order, about total/n_shards bytes each
        cur.append(k)
        acc += tensors[k].numel() * tensors[k].element_size()
        if acc >= total * (len(shards) + 1) / n_shards and len(shards) < n_shards - 1:
            shards.append(cur)
            cur = []
    shards.append(cur)
    assert len(shards) == n_shards and all(shards)
    weight_map, files = {}, []
    for i, ks in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        save_file({k: tensors[k].contiguous() for k in ks}, os.path.join(out_dir, fn),
                  metadata={"format": "pt"})
        files.append(fn)
        for k in ks:
            weight_map[k] = fn
    write_json(os.path.join(out_dir, "model.safetensors.index.json"),
               {"metadata": {"total_size": total}, "weight_map": weight_map})
    return files


def llama_param_shapes(cfg):
    """Ordered (name, shape) of a HF LlamaForCausalLM checkpoint."""
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or H // nh
    out = [("model.embed_tokens.weight", (V, H))]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (H,)),
                (p + "self_attn.q_proj.weight", (nh * hd, H)),
                (p + "self_attn.k_proj.weight", (nkv * hd, H)),
                (p + "self_attn.v_proj.weight", (nkv * hd, H)),
                (p + "self_attn.o_proj.weight", (H, nh * hd)),
                (p + "post_attention_layernorm.weight", (H,)),
                (p + "mlp.gate_proj.weight", (I, H)),
                (p + "mlp.up_proj.weight", (I, H)),
                (p + "mlp.down_proj.weight", (H, I))]
    out.append(("model.norm.weight", (H,)))
    if not cfg["tie_word_embeddings"]:
        out.append(("lm_head.weight", (V, H)))
    return out


def check_rotary(model, cfg, log):
    """Compare transformers' RoPE inverse frequencies with expected_inv_freq(cfg)."""
    import torch
    try:
        got = model.model.rotary_emb.inv_freq.detach().double().cpu()
    except AttributeError as e:
        log(f"CHECK rotary: cannot read inv_freq ({e})")
        return None
    exp = torch.tensor(expected_inv_freq(cfg), dtype=torch.float64)
    d = float(((got - exp).abs() / exp).max())
    log(f"CHECK rotary inv_freq max rel diff vs independent computation: {d:.3e}"
        + ("" if d < 1e-5 else "  <-- MISMATCH"))
    scale = getattr(model.model.rotary_emb, "attention_scaling", 1.0)
    if scale != 1.0:
        log(f"CHECK rotary attention_scaling = {scale}  <-- not 1.0")
    return d


def load_fp32(model_dir, attn="eager"):
    """AutoModelForCausalLM.from_pretrained in float32 (dtype= in transformers 5, torch_dtype=
    in older versions)."""
    import torch
    from transformers import AutoModelForCausalLM
    try:
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                    attn_implementation=attn)
    except TypeError:
        return AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32,
                                                    attn_implementation=attn)
