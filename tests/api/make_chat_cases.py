#!/usr/bin/env python3
"""Writes tests/api/chat_template_cases.json: transformers' apply_chat_template renderings
(tokenize=False, and the token ids with tokenize=True) of several conversations with the
Llama 2 chat template (meta-llama/Llama-2-7b-chat-hf's, verbatim) on the llama2-sp fixture and
the Llama 3 template the llama3-bpe fixture ships. Run where transformers is installed:
    python3 tests/api/make_chat_cases.py [OUT_DIR]
The C++ chat formats (api/chat_template.cc) are tested against the file."""
import json
import os
import sys

import transformers
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)

CONVERSATIONS = [
    ([{"role": "user", "content": "Hello"}], True),
    ([{"role": "system", "content": "You are terse."},
      {"role": "user", "content": "Who created the heaven?"}], True),
    ([{"role": "system", "content": "  Speak as the King James Bible.\n"},
      {"role": "user", "content": "Who was Moses?"},
      {"role": "assistant", "content": " And Moses was the son of Amram. "},
      {"role": "user", "content": "\tAnd Aaron?  \n"}], True),
    ([{"role": "user", "content": "  padded  \n"},
      {"role": "assistant", "content": " answer "},
      {"role": "user", "content": "next"}], False),
    ([{"role": "user", "content": "Unicode: caf\u00e9 \u65e5\u672c \U0001F642\u3000"}], True),
    ([{"role": "user", "content": ""}], True),
]


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "api")
    families = {
        "llama2": (os.path.join(ROOT, "tests/fixtures/llama2-sp"), LLAMA2_TEMPLATE),
        "llama3": (os.path.join(ROOT, "tests/fixtures/llama3-bpe"), None),
    }
    cases = []
    for family, (folder, template) in families.items():
        tok = AutoTokenizer.from_pretrained(folder)
        for messages, gen in CONVERSATIONS:
            kwargs = {"chat_template": template} if template else {}
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen,
                                           **kwargs)
            ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=gen,
                                          **kwargs)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            cases.append({"family": family, "messages": messages, "add_generation_prompt": gen,
                          "text": text, "ids": [int(i) for i in ids]})
    doc = {"made_with": f"transformers {transformers.__version__}",
           "llama2_template": LLAMA2_TEMPLATE, "cases": cases}
    with open(os.path.join(out_dir, "chat_template_cases.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
