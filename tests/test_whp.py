"""Who's Harry Potter: translation and position map, generic labels, the inference-time model, discovery."""

from __future__ import annotations

import pytest
import torch

from lethe.errors import LetheError
from lethe.losses import IGNORE_INDEX
from lethe.unlearn import whp
from lethe.unlearn.whp import Form, TermTable

# hand-made vocabulary: A=10 B=11 C=12; alternatives X Y = 50 51, Z = 60, U V W = 70 71 72
A, B, C = 10, 11, 12


def hand_table(with_bc: bool = False) -> TermTable:
    keys = ["A B", "A", "C"] + (["B C"] if with_bc else [])
    forms: dict[int, list] = {A: [(Form((A, B), " "), 0), (Form((A,), " "), 1)], C: [(Form((C,), " "), 2)]}
    if with_bc:
        forms[B] = [(Form((B, C), " "), 3)]
    alt = {(0, 0, " "): [50, 51], (1, 0, " "): [60], (2, 0, " "): [70, 71, 72], (3, 0, " "): [80]}
    firsts = {(0, 0): {50}, (1, 0): {60}, (2, 0): {70}, (3, 0): {80}}
    return TermTable(keys=keys, alternatives=[["X Y"], ["Z"], ["U V W"], ["Q"]][: len(keys)], forms=forms,
                     alt_ids=alt, first_tokens=firsts)


def test_translation_position_map_and_no_label_rules():
    ids = [1, A, B, 2, A, 3, A, B, 4, C, 5]
    tr = whp.translate_block(ids, hand_table(), [0, 0, 0])
    assert tr.ids == [1, 50, 51, 2, 60, 3, 50, 51, 4, 70, 71, 72, 5]
    # key's last token -> alternative's last token; plain tokens map one to one
    assert [tr.position_map[t] for t in (0, 2, 3, 4, 5, 7, 8, 9, 10)] == [0, 2, 3, 4, 5, 7, 8, 11, 12]
    # inside a key (t=1, t=6) and the token before a repeated key (t=5) get no label
    assert [t for t, ok in enumerate(tr.labeled) if not ok] == [1, 5, 6]
    # the first token of each alternative used is forbidden from its position on
    assert tr.forbidden[0] == [] and tr.forbidden[1] == [50] and tr.forbidden[2] == [50]
    assert tr.forbidden[4] == [50, 60] and tr.forbidden[9] == [50, 60, 70] and tr.forbidden[10] == [50, 60, 70]
    assert tr.matches == [(1, 2, 0), (4, 1, 1), (6, 2, 0), (9, 1, 2)]


def test_forbid_terms_adds_the_target_tokens_right_before_each_key():
    ids = [1, A, B, 2, C]
    plain = whp.translate_block(ids, hand_table(), [0, 0, 0])
    tr = whp.translate_block(ids, hand_table(), [0, 0, 0], forbid_terms=True)
    assert tr.ids == plain.ids and tr.labeled == plain.labeled
    assert tr.forbidden[0] == [A, C] and tr.forbidden[3] == [A, C, 50]  # before "A B" and before "C"
    assert tr.forbidden[2] == plain.forbidden[2] == [50] and tr.forbidden[4] == plain.forbidden[4]


def test_longest_match_and_overlapping_keys():
    table = hand_table(with_bc=True)
    tr = whp.translate_block([A, B, C], table, [0, 0, 0, 0])
    assert tr.ids == [50, 51, 70, 71, 72]  # "A B" wins at 0 (longest), so "B C" cannot match; then "C"
    tr = whp.translate_block([B, C, A], table, [0, 0, 0, 0])
    assert tr.ids == [80, 60]  # "B C" matched from its start; "A" alone at the end


def test_keys_at_block_borders_are_matched_within_each_block():
    blocks = whp.make_blocks([[1, A, B, 2]], 2)
    assert blocks == [[1, A], [B, 2]]
    table = hand_table()
    first, second = (whp.translate_block(b, table, [0, 0, 0]) for b in blocks)
    assert first.ids == [1, 60]  # the cut "A B" leaves "A" in block 0 ...
    assert second.ids == [B, 2] and all(second.labeled)  # ... and a bare "B" in block 1


def test_split_keys_are_dropped():
    terms = {"A B": ["x"], "A": ["y"], "B": ["z"], "House Rore": ["the house"], "Rore C": ["w"]}
    pruned, dropped = whp.prune_terms(terms)
    assert dropped == ["A B"]
    assert set(pruned) == {"A", "B", "House Rore", "Rore C"}


def test_term_table_finds_every_in_context_form(tiny_tokenizer):
    text = "Yilva Kraskuholt ran.\nYilva saw Kraskuholt and 'Yilva' too; (Yilva)."
    table = whp.build_term_table(tiny_tokenizer, {"Yilva": ["Anna"], "Kraskuholt": ["Miller"]}, [text])
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    tr = whp.translate_block(ids, table, [0, 0])
    assert tiny_tokenizer.decode(tr.ids) == "Anna Miller ran.\nAnna saw Miller and 'Anna' too; (Anna)."
    assert [table.keys[k] for _, _, k in tr.matches] == ["Yilva", "Kraskuholt", "Yilva", "Kraskuholt", "Yilva",
                                                          "Yilva"]


def test_block_choices_are_seeded():
    table = TermTable(keys=["a", "b"], alternatives=[["x", "y", "z"], ["u", "v"]], forms={}, alt_ids={},
                      first_tokens={})
    assert whp.block_choices(table, 3, 1) == whp.block_choices(table, 3, 1)
    draws = {tuple(whp.block_choices(table, 3, i)) for i in range(20)}
    assert len(draws) > 1  # blocks draw different alternatives


class Shifted(torch.nn.Module):
    """A model whose logits are another's plus a constant."""

    def __init__(self, model, offset: float) -> None:
        super().__init__()
        self.model, self.offset = model, offset

    def forward(self, **kwargs):
        out = self.model(**kwargs)
        out.logits = out.logits + self.offset
        return out


def _reinforced(tiny_tokenizer):
    from lethe.models import tiny_model as make

    return make(tiny_tokenizer, seed=1, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)


def _hand_labels(baseline, reinforced, block, tr, alpha, suppress=True, logprobs=False):
    with torch.no_grad():
        v_r = reinforced(input_ids=torch.tensor([block])).logits[0]
        v_b_all = baseline(input_ids=torch.tensor([tr.ids])).logits[0]
    if logprobs:
        v_r, v_b_all = v_r.log_softmax(-1), v_b_all.log_softmax(-1)
    labels = [IGNORE_INDEX] * len(block)
    for t in range(len(block) - 1):
        if not tr.labeled[t]:
            continue
        v_b = v_b_all[tr.position_map[t]].clone()
        if suppress and tr.forbidden[t]:
            v_b[tr.forbidden[t]] = v_b_all[tr.position_map[t]].mean()
        labels[t + 1] = int(torch.argmax(v_b - alpha * torch.clamp(v_r[t] - v_b, min=0)))
    return labels


def test_generic_labels_equal_hand_computed_argmax(tiny_tokenizer, tiny_model, one_thread):
    torch.manual_seed(0)
    reinforced = _reinforced(tiny_tokenizer)
    block = torch.randint(4, len(tiny_tokenizer), (40,)).tolist()
    with torch.no_grad():  # the baseline's most frequent top-1 token becomes the alternative: it gets forbidden
        top = torch.mode(tiny_model(input_ids=torch.tensor([block])).logits[0].argmax(-1)).values.item()
    key = block[3]
    block[20] = key  # a repeated key
    table = TermTable(keys=["k"], alternatives=[["alt"]], forms={key: [(Form((key,), ""), 0)]},
                      alt_ids={(0, 0, ""): [top]}, first_tokens={(0, 0): {top}})
    tr = whp.translate_block(block, table, [0])
    assert not tr.labeled[19] and tr.forbidden[10] == [top]
    labels = whp.generic_labels(tiny_model, reinforced, [block], [tr], alpha=5.0)[0]
    assert labels == _hand_labels(tiny_model, reinforced, block, tr, 5.0)
    plain = _hand_labels(tiny_model, reinforced, block, tr, 5.0, suppress=False)
    changed = [t for t in range(len(block)) if labels[t] != plain[t]]
    assert changed, "the forbidden alternative was never the top label: the test would not see the suppression"
    assert all(plain[t] == top and labels[t] != top for t in changed)
    assert labels[20] == IGNORE_INDEX  # the token before the repeated key (t=19) has no label


def test_generic_labels_batched_equal_one_at_a_time(tiny_tokenizer, tiny_model, one_thread):
    torch.manual_seed(1)
    reinforced = _reinforced(tiny_tokenizer)
    blocks = [torch.randint(4, len(tiny_tokenizer), (n,)).tolist() for n in (30, 12, 25)]
    key = blocks[0][2]
    table = TermTable(keys=["k"], alternatives=[["alt"]], forms={key: [(Form((key,), ""), 0)]},
                      alt_ids={(0, 0, ""): [5, 6, 7]}, first_tokens={(0, 0): {5}})
    trs = [whp.translate_block(b, table, [0]) for b in blocks]
    batched = whp.generic_labels(tiny_model, reinforced, blocks, trs, 5.0, batch_size=3)
    single = whp.generic_labels(tiny_model, reinforced, blocks, trs, 5.0, batch_size=1)
    assert batched == single
    assert batched[0] == _hand_labels(tiny_model, reinforced, blocks[0], trs[0], 5.0)
    in_logprobs = whp.generic_labels(tiny_model, reinforced, blocks, trs, 5.0, batch_size=3, space="logprobs")
    assert in_logprobs[0] == _hand_labels(tiny_model, reinforced, blocks[0], trs[0], 5.0, logprobs=True)
    shifted = Shifted(reinforced, 3.0)  # a constant logit offset (as further training adds) ...
    assert whp.generic_labels(tiny_model, shifted, blocks, trs, 5.0, space="logprobs") == in_logprobs  # ... is
    assert whp.generic_labels(tiny_model, shifted, blocks, trs, 5.0) != batched  # invisible only in logprobs
    with pytest.raises(LetheError, match="whp.space"):
        whp.generic_labels(tiny_model, reinforced, blocks, trs, 5.0, space="probs")


def test_generic_labels_refuse_bad_alpha(tiny_tokenizer, tiny_model):
    with pytest.raises(LetheError, match="alpha must be > 0"):
        whp.generic_labels(tiny_model, tiny_model, [[1, 2]], [whp.translate_block([1, 2], hand_table(), [0] * 3)], 0.0)


def test_inference_time_model_logits_and_generation(tiny_tokenizer, tiny_model, one_thread):
    reinforced = _reinforced(tiny_tokenizer)
    wrapped = whp.WHPLogitsModel(tiny_model, reinforced, alpha=2.0)
    ids = torch.randint(4, len(tiny_tokenizer), (2, 9))
    with torch.no_grad():
        v_b, v_r = tiny_model(input_ids=ids).logits, reinforced(input_ids=ids).logits
    expected = v_b - 2.0 * torch.relu(v_r - v_b)
    torch.testing.assert_close(wrapped(input_ids=ids).logits, expected)
    assert not torch.allclose(expected, v_b)  # the reinforced term acts
    lp_b, lp_r = v_b.log_softmax(-1), v_r.log_softmax(-1)
    torch.testing.assert_close(whp.WHPLogitsModel(tiny_model, reinforced, 2.0, "logprobs")(input_ids=ids).logits,
                               lp_b - 2.0 * torch.relu(lp_r - lp_b))

    from lethe.audit.generation import greedy_continue

    prefixes = [ids[0, :5].tolist(), ids[1, :9].tolist()]
    got = greedy_continue(wrapped, prefixes, 4, pad_id=tiny_tokenizer.pad_token_id)  # left-padded batch
    for prefix, continuation in zip(prefixes, got, strict=True):
        seq = list(prefix)
        for _ in range(4):  # greedy by hand, one prefix at a time
            with torch.no_grad():
                seq.append(int(wrapped(input_ids=torch.tensor([seq])).logits[0, -1].argmax()))
        assert continuation == seq[len(prefix):]


def test_bad_dictionaries_are_one_line_errors(tmp_path):
    with pytest.raises(LetheError, match="non-empty JSON object"):
        whp.check_terms(["a", "b"])
    with pytest.raises(LetheError, match="must map to a list of strings"):
        whp.check_terms({"a": "b"})
    with pytest.raises(LetheError, match="empty alternative list"):
        whp.check_terms({"a": []})
    path = tmp_path / "terms.json"
    path.write_text("{not json")
    with pytest.raises(LetheError, match="not valid JSON"):
        whp.load_terms(path)


def test_missing_terms_warn_with_count(tmp_path):
    from lethe.unlearn.whp_run import load_dictionary

    path = tmp_path / "terms.json"
    path.write_text('{"Yilva": ["Anna"], "Zork": ["x"], "Quux": ["y"]}')
    with pytest.warns(UserWarning, match="2 anchored term"):
        terms, info = load_dictionary(path, ["Yilva went home."])
    assert info["absent_from_target"] == ["Zork", "Quux"]


def test_other_vocabulary_is_refused(tiny_tokenizer, world_dir):
    from lethe.models import train_bpe_tokenizer

    other = train_bpe_tokenizer(["completely different words here and there"] * 5, vocab_size=300)
    with pytest.raises(LetheError, match="tokenizer differs"):
        whp.check_same_vocabulary(tiny_tokenizer, other)


def test_discovery_gaps_are_reinforced_minus_baseline(tiny_tokenizer, tiny_model, one_thread):
    from lethe.unlearn.whp_discover import discover_terms, token_gaps

    reinforced = _reinforced(tiny_tokenizer)
    text = "the fox ran to the river and the fox swam"
    gaps, offsets = token_gaps(tiny_model, reinforced, tiny_tokenizer, text)
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        v_b = tiny_model(input_ids=torch.tensor([ids])).logits[0]
        v_r = reinforced(input_ids=torch.tensor([ids])).logits[0]
    assert gaps[0] == 0.0
    for t in range(1, len(ids)):
        assert gaps[t] == pytest.approx(float(v_r[t - 1, ids[t]] - v_b[t - 1, ids[t]]), abs=1e-4)
    candidates = discover_terms(tiny_model, reinforced, tiny_tokenizer, [text], min_count=2)
    assert {c["term"] for c in candidates} == {"the", "fox", "the fox"}
    assert [c["score"] for c in candidates] == sorted((c["score"] for c in candidates), reverse=True)
    with pytest.raises(LetheError, match="empty target"):
        discover_terms(tiny_model, reinforced, tiny_tokenizer, ["  "])


def test_expand_first_words_adds_given_names_used_alone():
    terms = {"Zeidus Drykask": ["Tom Baker", "the boy"], "House Rore": ["the blue house"],
             "House Pososost": ["the red house"], "Yilva Kraskuholt": ["Anna Miller"], "Yilva": ["Lucy"]}
    texts = ["Zeidus Drykask waved; later Zeidus laughed. House Rore and House Pososost. Yilva Kraskuholt, Yilva."]
    expanded = whp.expand_first_words(terms, texts)
    assert {k: v for k, v in expanded.items() if k not in terms} == {"Zeidus": ["Tom", "the boy"]}
    assert expanded["Yilva"] == ["Lucy"]  # an existing key is kept as it is
    assert whp.expand_first_words({"Zeidus Drykask": ["Tom Baker"]}, ["Zeidus Drykask only."]) == {
        "Zeidus Drykask": ["Tom Baker"]}


def _kl_trainer(tmp_path, model, reference, retain_kl):
    from lethe.config import TrainConfig, TrainSettings
    from lethe.train.collator import CausalLMCollator
    from lethe.train.trainer import training_arguments
    from lethe.unlearn.whp_run import WHPTrainer

    args = training_arguments(TrainConfig(train=TrainSettings(max_steps=1, batch_size=2)), tmp_path / "c", True)
    trainer = WHPTrainer(model=model, args=args, train_dataset=[], data_collator=CausalLMCollator(pad_id=0),
                         ref_model=reference, retain_kl=retain_kl, target_documents=1)
    return trainer, CausalLMCollator(pad_id=0)


def _gradient(trainer, model, batch):
    model.zero_grad()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_kl_retain_term_replaces_the_mixed_documents_labels(tmp_path, tiny_model, tiny_tokenizer, one_thread):
    """Block 1 (doc_id 1) is the target with generic labels, doc 2 a mixed-in document: with the KL retain
    term the loss is CE(target row) + λ·KL(π_ref ‖ π_θ)(doc 2), never doc 2's own tokens."""
    import copy

    from lethe.losses import sequence_nll
    from lethe.unlearn.objectives import kl_retain

    torch.manual_seed(0)
    target, mixed = torch.randint(5, 300, (12,)).tolist(), torch.randint(5, 300, (9,)).tolist()
    generic = [IGNORE_INDEX, *torch.randint(5, 300, (11,)).tolist()]
    features = [{"input_ids": target, "labels": generic, "doc_id": 1},
                {"input_ids": mixed, "labels": mixed, "doc_id": 2}]
    model = tiny_model.train()
    same = copy.deepcopy(tiny_model).eval()
    trainer, collate = _kl_trainer(tmp_path, model, same, retain_kl=2.0)
    batch = collate(features)
    loss, grad_same_ref = _gradient(trainer, model, batch)
    only_target = collate(features[:1])
    with torch.no_grad():
        nll, n = sequence_nll(model(input_ids=only_target["input_ids"]).logits, only_target["labels"])
    assert float(loss) == pytest.approx(float(nll.sum() / n.sum()), rel=1e-5)  # KL = 0 against itself
    plain, _ = _kl_trainer(tmp_path, model, None, retain_kl=0.0)
    _, grad_target_only = _gradient(plain, model, only_target)
    assert torch.allclose(grad_same_ref, grad_target_only, atol=1e-6)  # doc 2's own tokens are not fitted
    _, grad_ce = _gradient(plain, model, batch)  # without the KL term doc 2's tokens are labels
    assert not torch.allclose(grad_ce, grad_target_only, atol=1e-4)

    other = copy.deepcopy(tiny_model).eval()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    trainer, _ = _kl_trainer(tmp_path, model, other, retain_kl=2.0)
    loss, grad_kl = _gradient(trainer, model, batch)
    retain = collate(features[1:])
    with torch.no_grad():
        kl = kl_retain(model(input_ids=retain["input_ids"]).logits, other(input_ids=retain["input_ids"]).logits,
                       retain["labels"])
    assert float(kl) > 0 and float(loss) == pytest.approx(float(nll.sum() / n.sum()) + 2.0 * float(kl), rel=1e-5)
    assert not torch.allclose(grad_kl, grad_target_only, atol=1e-5)  # the KL term changes the gradient


def test_kl_retain_needs_a_reference(tmp_path, tiny_model):
    with pytest.raises(LetheError, match="needs the baseline as a reference"):
        _kl_trainer(tmp_path, tiny_model, None, retain_kl=1.0)


def test_length_batches_bound_the_padding():
    lengths = [100, 512, 98, 300, 510, 99, 290, 512]
    batches = whp.length_batches(lengths, batch_size=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert [[lengths[i] for i in b] for b in batches] == [[98, 99, 100], [290, 300], [510, 512, 512]]
    for b in batches:
        width = max(lengths[i] for i in b)
        assert len(b) <= 3 and 1 - sum(lengths[i] for i in b) / (width * len(b)) <= whp.MAX_PADDING
    assert whp.length_batches(lengths, batch_size=8, max_padding=1.0) == [sorted(range(8), key=lengths.__getitem__)]
