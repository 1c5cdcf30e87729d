"""Writes the Hugging Face reference data of tests/test_hf_checkpoint.py (run once; the outputs are committed).

    pip install torch==2.13.0 "transformers>=4.40,<5"      # the CPU torch build
    python tests/data/make_hf_reference.py                  # from the repository root

transformers 4.x pins older tokenizers and huggingface-hub than `datasets` wants. To keep the project's
environment intact, install them apart and put them first on the path only for this script and the oracle
tests:
    pip install --no-deps --target /tmp/hfref torch==2.13.0 transformers==4.57.6 huggingface-hub==0.36.2 \
        tokenizers==0.22.2
    PYTHONPATH=/tmp/hfref:. python tests/data/make_hf_reference.py
    PYTHONPATH=/tmp/hfref:. pytest tests/test_hf_checkpoint.py -m oracle -n0 -s

Writes, under tests/data/:

* hf_bert_tiny/: a randomly initialised `transformers.BertForMaskedLM` (2 layers, hidden 32, 4 heads,
  vocabulary 512), every parameter then perturbed by N(0, 0.02) noise so that biases and LayerNorm
  parameters are not 0 and 1 (a swapped or dropped one changes the logits), saved with `save_pretrained`
  (model.safetensors, config.json), and `BertTokenizerFast(vocab.txt, do_lower_case=True).save_pretrained`
  (vocab.txt, tokenizer_config.json, tokenizer.json: the Rust tokenizer BertTokenizerFast runs). The
  vocabulary is a 512-token uncased WordPiece vocabulary our trainer made from pydoc_data.topics;
* hf_bert_tiny_reference.npz: two question/context pairs (questions, contexts), the batch
  `BertTokenizerFast` makes of them (input_ids, token_type_ids, attention_mask: padded to the longer pair,
  token types 0/1) and HF's float32 MLM logits [2, L, 512] on it (eval mode);
* hf_tokenizer_cased/: vocab.txt (1024 tokens, cased, trained the same way), tokenizer_config.json and
  tokenizer.json of `BertTokenizerFast(vocab.txt, do_lower_case=False)`;
* hf_reference_versions.json: the versions used.
"""
import json
import os
import platform
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
DATA = os.path.join(ROOT, "tests", "data")

QUESTIONS = ["What does the with statement do?", "Which exception does next() raise?"]
CONTEXTS = ["The with statement wraps a block in the methods of a context manager.",
            "When the iterator is exhausted, StopIteration is raised."]


def main():
  import safetensors  # pylint: disable=g-import-not-at-top
  import tokenizers  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from experiments.bert import input_pipeline  # pylint: disable=g-import-not-at-top

  documents = input_pipeline.load_documents("pydoc")
  model_dir = os.path.join(DATA, "hf_bert_tiny")
  cased_dir = os.path.join(DATA, "hf_tokenizer_cased")
  for directory in (model_dir, cased_dir):
    os.makedirs(directory, exist_ok=True)
  input_pipeline.train_wordpiece_vocab(documents, 512, os.path.join(model_dir, "vocab.txt"), lowercase=True)
  input_pipeline.train_wordpiece_vocab(documents, 1024, os.path.join(cased_dir, "vocab.txt"), lowercase=False)
  for directory, lowercase in ((model_dir, True), (cased_dir, False)):
    transformers.BertTokenizerFast(os.path.join(directory, "vocab.txt"), do_lower_case=lowercase
                                   ).save_pretrained(directory)

  torch.manual_seed(0)
  config = transformers.BertConfig(vocab_size=512, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64, max_position_embeddings=64, type_vocab_size=2)
  model = transformers.BertForMaskedLM(config).eval()
  with torch.no_grad():
    for parameter in model.parameters():
      parameter.add_(0.02 * torch.randn_like(parameter))
  model.save_pretrained(model_dir, safe_serialization=True)

  tokenizer = transformers.BertTokenizerFast.from_pretrained(model_dir)
  batch = tokenizer(QUESTIONS, CONTEXTS, padding=True, return_tensors="np")
  with torch.no_grad():
    logits = model(**{name: torch.from_numpy(value) for name, value in batch.items()}).logits.numpy()
  np.savez_compressed(os.path.join(DATA, "hf_bert_tiny_reference.npz"), logits=logits.astype(np.float32),
                      questions=np.array(QUESTIONS), contexts=np.array(CONTEXTS),
                      **{name: value.astype(np.int32) for name, value in batch.items()})
  versions = {"transformers": transformers.__version__, "torch": torch.__version__,
              "tokenizers": tokenizers.__version__, "safetensors": safetensors.__version__,
              "numpy": np.__version__, "python": platform.python_version()}
  with open(os.path.join(DATA, "hf_reference_versions.json"), "w") as f:
    json.dump(versions, f, indent=2)
  print(json.dumps(versions))


if __name__ == "__main__":
  main()
