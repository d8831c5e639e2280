"""Regenerates tests/tokenizer/data/kjv-sp/tokenizer_cases.json with the sentencepiece library
(Debian's python3-sentencepiece): ids = encode(text), ids_with_special = [bos] + ids,
decoded = decode(ids). The models were trained with spm_train (see README.md).
Development tool only: the C++ tests read the committed output.

    /usr/bin/python3 tests/tokenizer/data/make_sp_reference.py
"""
import json
import os

import sentencepiece as spm

here = os.path.dirname(os.path.abspath(__file__))
sp = spm.SentencePieceProcessor(model_file=os.path.join(here, "kjv-sp", "tokenizer.model"))
with open(os.path.join(here, "case_texts.json"), encoding="utf-8") as f:
    texts = json.load(f)
cases = []
for text in texts:
    ids = sp.encode(text)
    cases.append({"text": text, "ids": ids, "ids_with_special": [sp.bos_id()] + ids,
                  "decoded": sp.decode(ids)})
with open(os.path.join(here, "kjv-sp", "tokenizer_cases.json"), "w", encoding="utf-8") as f:
    json.dump(cases, f, ensure_ascii=False, indent=1)
    f.write("\n")
print(f"kjv-sp: {len(cases)} cases, sentencepiece {spm.__version__}")
