import json

import pytest

from minituner.model.tokenizer import ByteTokenizer


def test_roundtrip_and_specials(tmp_path):
    tok = ByteTokenizer()
    ids = tok.encode("go: yesterday she went home. é", bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids) == "go: yesterday she went home. é"
    assert tok.vocab_size == 259
    (tmp_path / "tokenizer.json").write_text(json.dumps(tok.to_dict()))
    assert ByteTokenizer.load(tmp_path / "tokenizer.json") == tok


def test_load_refuses_another_tokenizer(tmp_path):
    (tmp_path / "tok.json").write_text('{"type": "bpe"}')
    with pytest.raises(ValueError, match="tokenizer type 'bpe'"):
        ByteTokenizer.load(tmp_path / "tok.json")
