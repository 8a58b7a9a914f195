#!/usr/bin/env python3
"""SigLIP reference data for sieve, generated with Hugging Face transformers.

Writes (relative to --root):
  models/tiny-siglip/              tiny seeded SiglipModel (f32 safetensors) in the Hub's layout:
                                   config.json with only the non-default keys (as the Hub's are),
                                   preprocessor_config.json (SiglipImageProcessor), spiece.model (a
                                   tiny SentencePiece unigram model trained here, ids laid out as
                                   google's: <pad> 0, </s> 1, <unk> 2), and what
                                   SiglipTokenizer.save_pretrained writes beside it; no tokenizer.json
  tests/fixtures/golden/siglip/    tokens.json (SiglipTokenizer ids, padding="max_length",
                                   max_length=64, truncation, for the fixture captions and tricky
                                   ones), pixels_<stem>.npy (SiglipImageProcessorPil, the PIL
                                   backend), image_embeds.npy / text_embeds.npy (pooler_output, not
                                   normalised, input_ids without an attention mask as the model card
                                   does), image_embeds_single.npy, logits_per_text.npy, manifest.json

Inputs: tests/fixtures/images and tests/fixtures/captions.json.
Run with the venv scripts/make_reference.sh creates:
  /tmp/sieve-ref-venv/bin/python scripts/make_reference_siglip.py
Everything is seeded; running it twice gives the same output.
"""

import argparse
import io
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import PIL
import sentencepiece as spm
import torch
import transformers
from PIL import Image
from safetensors.torch import save_file
from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel, SiglipTokenizer

PREPROCESSOR = {
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "SiglipImageProcessor",
    "image_std": [0.5, 0.5, 0.5],
    "processor_class": "SiglipProcessor",
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 32, "width": 32},
}

# Captions beyond the fixture ones, for the tokenizer's edge cases.
TRICKY = [
    "Hello, World! It's a dog's life -- isn't it?",
    "tabs\tand\nnewlines\r\n  and   runs   of   spaces  ",
    "\u00a0non-breaking\u3000ideographic space\u2003em space\x1cfile sep",
    "猫と犬 🐶🐱 emoji and CJK",
    "a▁b ▁▁ underline",
    "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ and ﬁ ligature",
    "ΣΊΣΥΦΟΣ ΟΔΥΣΣΕΥΣ",
    "İstanbul straße",
    "a dog</s>on a mat <unk> and <pad>",
    "!!!",
    "- a leading dash",
    " ".join(["longer"] * 80),
]

# Training text for the tiny SentencePiece model: lower-case words without punctuation, as
# SiglipTokenizer feeds it.
WORDS = (
    "a photo of the cat dog man woman child people car boat house tree mountain river bird glass stone "
    "red green blue small large old new light dark bright sunny cloudy evening shadow picture with in on "
    "at near over runs stands sits and café naïve unicode world hello life its isnt leading dash tabs "
    "newlines spaces non breaking ideographic space em file sep emoji cjk underline fullwidth text ligature"
).split()


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def train_spm(path):
    rng = np.random.default_rng(7)
    # Made-up words from syllables give the trainer enough distinct pieces for a few hundred.
    syll = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    # The real words ten times as likely, so they (and pieces of them) make it into the vocabulary.
    words = WORDS + ["".join(rng.choice(syll, size=int(rng.integers(2, 4)))) for _ in range(400)]
    weights = np.array([10.0] * len(WORDS) + [1.0] * (len(words) - len(WORDS)))
    p = weights / weights.sum()
    lines = [" ".join(rng.choice(words, size=int(rng.integers(3, 12)), p=p)) for _ in range(4000)]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buf,
        model_type="unigram",
        vocab_size=300,
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        num_threads=1,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    path.write_bytes(buf.getvalue())


def config_keys(vocab_size):
    """config.json as the Hub's SigLIP repos write it: only the keys that differ from
    transformers' defaults (max_position_embeddings 64, gelu_pytorch_tanh, 1e-6 ... are left out)."""
    return {
        "architectures": ["SiglipModel"],
        "model_type": "siglip",
        "text_config": {
            "vocab_size": vocab_size,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
        },
        "vision_config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
        },
    }


def make_model(vocab_size):
    keys = config_keys(vocab_size)
    config = SiglipConfig(text_config=keys["text_config"], vision_config=keys["vision_config"])
    config.architectures = ["SiglipModel"]
    torch.manual_seed(42)
    model = SiglipModel(config)
    g = torch.Generator().manual_seed(4242)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                p.fill_(2.3)
            elif name == "logit_bias":
                p.fill_(-1.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias") or name.endswith("in_proj_bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
            elif "position_embedding" in name or "probe" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "patch_embedding.weight" in name or "q_proj" in name or "k_proj" in name:
                p.mul_(4.0)
    model.eval()
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(Path(__file__).resolve().parent.parent))
    args = ap.parse_args()
    root = Path(args.root)
    model_dir = root / "models" / "tiny-siglip"
    gold_dir = root / "tests" / "fixtures" / "golden" / "siglip"
    img_dir = root / "tests" / "fixtures" / "images"
    model_dir.mkdir(parents=True, exist_ok=True)
    gold_dir.mkdir(parents=True, exist_ok=True)

    spiece = model_dir / "spiece.model"
    train_spm(spiece)
    tokenizer = SiglipTokenizer(vocab_file=str(spiece))
    tokenizer.save_pretrained(str(model_dir))
    assert not (model_dir / "tokenizer.json").exists(), "SigLIP repos ship no tokenizer.json"
    tokenizer = SiglipTokenizer.from_pretrained(str(model_dir))

    model = make_model(tokenizer.vocab_size)
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    os.chmod(model_dir / "model.safetensors", 0o644)
    write_json(model_dir / "config.json", config_keys(tokenizer.vocab_size))
    write_json(model_dir / "preprocessor_config.json", PREPROCESSOR)
    (model_dir / "README.md").write_text(
        "# tiny-siglip\n\nA tiny seeded `SiglipModel` (hidden 32, 2 layers, 4 heads, 32 px images, patch 8, 64 text\n"
        "positions) with random weights and a 300-piece SentencePiece model trained on a few words, made by\n"
        f"`scripts/make_reference_siglip.py` with transformers {transformers.__version__}. Not a useful model: it\n"
        "exists so sieve's SigLIP path can be checked against transformers offline.\n"
    )

    reloaded = SiglipModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    for (k, a), (k2, b) in zip(sorted(model.state_dict().items()), sorted(reloaded.state_dict().items())):
        assert k == k2 and torch.equal(a, b), k
    # The sparse config.json reads back as the full one.
    for tower in ("text_config", "vision_config"):
        a, b = getattr(reloaded.config, tower).to_dict(), getattr(model.config, tower).to_dict()
        skip = {"transformers_version", "architectures", "_name_or_path", "dtype"}
        assert {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items() if k not in skip}, tower
    processor = SiglipImageProcessorPil.from_pretrained(str(model_dir))

    captions = json.loads((root / "tests" / "fixtures" / "captions.json").read_text())
    texts = captions + TRICKY
    enc = tokenizer(texts, padding="max_length", max_length=64, truncation=True)
    ids = enc["input_ids"]
    assert all(len(r) == 64 for r in ids)
    unpadded = [tokenizer(t)["input_ids"] for t in texts]
    write_json(
        gold_dir / "tokens.json",
        {"captions": texts, "ids": ids, "untruncated_len": [len(u) for u in unpadded]},
    )

    names = sorted(p.name for p in img_dir.iterdir() if p.is_file())
    pixels = []
    for name in names:
        with Image.open(img_dir / name) as im:
            pv = processor(images=im, return_tensors="pt")["pixel_values"]
        pv = pv.detach().cpu().numpy().astype(np.float32)
        assert pv.shape == (1, 3, 32, 32), pv.shape
        np.save(gold_dir / f"pixels_{Path(name).stem}.npy", pv[0])
        pixels.append(pv[0])
    batch = torch.from_numpy(np.stack(pixels))
    n_cap = len(captions)
    input_ids = torch.tensor(ids[:n_cap])
    with torch.inference_mode():
        image_embeds = reloaded.get_image_features(pixel_values=batch).pooler_output.numpy().astype(np.float32)
        text_embeds = reloaded.get_text_features(input_ids=input_ids).pooler_output.numpy().astype(np.float32)
        single = np.concatenate(
            [reloaded.get_image_features(pixel_values=batch[i : i + 1]).pooler_output.numpy() for i in range(len(names))]
        )
        # Pairs: caption i with image i, as many as there are of both.
        k = min(len(names), n_cap)
        out = reloaded(input_ids=input_ids[:k], pixel_values=batch[:k])
        logits = out.logits_per_text.numpy().astype(np.float32)
    np.save(gold_dir / "image_embeds.npy", image_embeds)
    np.save(gold_dir / "image_embeds_single.npy", single.astype(np.float32))
    np.save(gold_dir / "text_embeds.npy", text_embeds)
    np.save(gold_dir / "logits_per_text.npy", logits)
    write_json(
        gold_dir / "manifest.json",
        {
            "images": names,
            "captions": n_cap,
            "pairs": k,
            "logit_scale": float(reloaded.logit_scale.item()),
            "logit_bias": float(reloaded.logit_bias.item()),
            "embedding": "SiglipModel get_image_features / get_text_features(input_ids, no attention mask) .pooler_output, not normalised",
            "pixels": "SiglipImageProcessorPil (the PIL backend) of models/tiny-siglip",
            "tokens": "SiglipTokenizer(spiece.model), padding='max_length', max_length=64, truncation=True",
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "sentencepiece": spm.__version__,
                "PIL": PIL.__version__,
                "numpy": np.__version__,
            },
        },
    )
    diff = float(np.abs(image_embeds - single).max())
    print(f"{len(names)} images, {n_cap} captions; batched vs single max |diff| {diff:.2e}")
    print("logits_per_text diag", np.diag(logits).round(3))


if __name__ == "__main__":
    sys.exit(main())
