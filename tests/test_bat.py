"""bat.py: Q-Former shapes, the prompt template, batch layout / label masking, padding invariance, answering."""
import torch

import bat
import llama


def tiny_bat(n_query=4, enc_dim=24, vocab=40, projector='qformer', table_tokens=0, classes=None):
    torch.manual_seed(0)
    qa = bat.QFormerArgs(n_layers=2, n_query=n_query, dim=32, n_heads=4, ffn_dim=64, encoder_dim=enc_dim,
                         llm_dim=48, dropout=0.0, projector=projector, table_tokens=table_tokens,
                         named_sources=len(classes) if classes else 0)
    lm = llama.Transformer(llama.ModelArgs(dim=48, n_layers=2, n_heads=4, vocab_size=vocab, multiple_of=16,
                                           max_seq_len=64))
    return bat.BAT(bat.make_projector(qa), lm, classes).eval()


def test_qformer_shapes_and_layout():
    a = bat.QFormerArgs(n_layers=4, n_query=8, dim=32, n_heads=4, ffn_dim=64, encoder_dim=24, llm_dim=48)
    q = bat.QFormer(a)
    assert q(torch.randn(3, 17, 24)).shape == (3, 8, 48)
    assert [layer.cross_attn is not None for layer in q.layers] == [True, False, True, False]  # every 2nd layer
    for kind in ('linear', 'mlp'):
        p = bat.make_projector(bat.QFormerArgs(n_query=8, encoder_dim=24, llm_dim=48, dim=32, projector=kind))
        assert p(torch.randn(3, 17, 24)).shape == (3, 8, 48)


def test_qformer_paper_size():
    a = bat.QFormerArgs()  # released recipe: 8 layers, 64 queries, hidden 768, 12 heads, FFN 3072, -> 4096
    assert (a.n_layers, a.n_query, a.dim, a.n_heads, a.ffn_dim, a.cross_every, a.llm_dim) == (8, 64, 768, 12, 3072, 2, 4096)
    n = sum(p.numel() for p in bat.QFormer(a).parameters())
    assert 65e6 < n < 75e6  # README: about 73.56M incl. BERT's unused text parts; ours has only the query path


def test_prompt_template():
    p = bat.format_prompt('Where is the dog? ')
    assert p == ("Based on the audio you've heard, refer to the instruction and provide a response.\n\n"
                 "### Instruction:\nWhere is the dog?\n\n### Response:")


def test_collate_known_sequence():
    b = bat.collate([[1, 5, 6], [1, 7]], [[8, 2], [9, 10, 2]], n_prefix=2, pad_id=0)
    assert b['tokens'].tolist() == [[0, 0, 1, 5, 6, 8, 2, 0], [0, 0, 0, 1, 7, 9, 10, 2]]
    assert b['audio_mask'].long().tolist() == [[1, 1, 0, 0, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0, 0, 0]]
    assert b['attention_mask'].tolist() == [[1, 1, 1, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1, 1, 1]]
    # position t predicts token t+1: only the answer + EOS are targets
    assert b['targets'].tolist() == [[-1, -1, -1, -1, 8, 2, -1, -1], [-1, -1, -1, -1, 9, 10, 2, -1]]
    g = bat.collate([[1, 5, 6], [1, 7]], None, n_prefix=2, pad_id=0)  # generation: prompts only, right-aligned
    assert g['tokens'].tolist() == [[0, 0, 1, 5, 6], [0, 0, 0, 1, 7]]
    assert (g['targets'] == -1).all()


def test_loss_is_padding_invariant():
    """An item's loss is the same alone or batched with a longer/shorter neighbour (masks and positions right)."""
    model = tiny_bat()
    audio = torch.randn(2, 9, 24)
    prompts, answers = [[1, 5, 6, 7, 8], [1, 9]], [[11, 2], [12, 13, 14, 2]]
    both = bat.collate(prompts, answers, 4, 2)
    emb = model.embeds(audio, both)
    logits = model.llm(embeds=emb, attention_mask=both['attention_mask'])
    for i in range(2):
        alone = bat.collate(prompts[i:i + 1], answers[i:i + 1], 4, 2)
        la = model.llm(embeds=model.embeds(audio[i:i + 1], alone), attention_mask=alone['attention_mask'])
        m_both, m_alone = both['targets'][i] != -1, alone['targets'][0] != -1
        assert torch.allclose(logits[i][m_both], la[0][m_alone], atol=1e-4)
    loss = model(audio, both)
    manual = torch.nn.functional.cross_entropy(logits.view(-1, 40), both['targets'].view(-1), ignore_index=-1)
    assert torch.allclose(loss, manual, atol=1e-5)


def test_answer_greedy_matches_beam1_and_batching():
    model = tiny_bat()
    audio = torch.randn(3, 9, 24)
    prompts = [[1, 5, 6, 7], [1, 9], [1, 3, 4]]
    batched = model.answer(audio, prompts, pad_id=2, eos_id=2, max_new_tokens=6)
    single = [model.answer(audio[i:i + 1], prompts[i:i + 1], pad_id=2, eos_id=2, max_new_tokens=6)[0] for i in range(3)]
    assert batched == single
    beam1 = [model._beam(audio[i:i + 1], prompts[i], 2, 2, 6, 1) for i in range(3)]
    assert beam1 == batched  # beam width 1 is greedy
    beams = model.answer(audio, prompts, pad_id=2, eos_id=2, max_new_tokens=6, beams=3)
    assert len(beams) == 3 and all(isinstance(b, list) for b in beams)


def test_position_table_skips_the_projector():
    """The encoder's last table_tokens tokens become their own prefix slots (after the projector's n_query); the
    projector reads only the tokens before them."""
    model = tiny_bat(table_tokens=2)
    assert model.projector.args.n_prefix == 6
    audio = torch.randn(2, 9, 24)
    batch = bat.collate([[1, 5, 6], [1, 7]], [[8, 2], [9, 2]], 6, 0)
    emb = model.embeds(audio, batch)
    prefix = emb[batch['audio_mask']].view(2, 6, 48)
    assert torch.allclose(prefix[:, :4], model.projector(audio[:, :7]), atol=1e-6)
    assert torch.allclose(prefix[:, 4:], model.table(audio[:, 7:]), atol=1e-6)
    changed = audio.clone()
    changed[:, 8] += 1.0  # the second table token moves only the last slot
    after = model.embeds(changed, batch)[batch['audio_mask']].view(2, 6, 48)
    assert torch.equal(after[:, :5], prefix[:, :5]) and not torch.allclose(after[:, 5], prefix[:, 5])
    assert model.answer(audio, [[1, 5, 6], [1, 7]], pad_id=0, eos_id=2, max_new_tokens=3)  # generation lays it out too


def test_name_index():
    """Named classes in the order the question names them, whole words, case-insensitive, longest name first."""
    classes = ['Bell', 'Church bell', 'Beep, bleep', 'Wind', 'Sine wave']
    got = bat.name_index(['Is the church bell to the left of the beep, bleep?', 'Where is the wind?',
                          'Is the sine wave above the bell?', 'Is the windmill loud?', 'What do you hear?'], classes)
    assert got.tolist() == [[1, 2], [3, -1], [4, 0], [-1, -1], [-1, -1]]


def test_named_sources_read_the_named_rows():
    """The 3 named slots (first named, second named, their difference) follow the named classes' rows only; the
    projector reads the token sequence before the class rows; a question naming one sound leaves the second empty."""
    classes = ['Bell', 'Wind', 'Siren']
    model = tiny_bat(classes=classes)
    assert model.projector.args.n_prefix == 7
    audio = torch.randn(2, 7 + 3, 24)  # 7 encoder tokens, then one row per class: [prob, right, front, up, dist]
    named = model.name_index(['Is the siren left of the bell?', 'Where is the wind?'])
    assert named.tolist() == [[2, 0], [1, -1]]
    batch = bat.collate([[1, 5, 6], [1, 7]], [[8, 2], [9, 2]], 7, 0)
    batch['named'] = named
    prefix = model.embeds(audio, batch)[batch['audio_mask']].view(2, 7, 48)
    assert torch.allclose(prefix[:, :4], model.projector(audio[:, :7]), atol=1e-6)
    changed = audio.clone()
    changed[0, 7 + 1] += 1.0  # the wind's row: not named in item 0
    changed[1, 7 + 1, 3] += 1.0  # item 1's only named sound moves up: its first slot changes, the others stay empty
    after = model.embeds(changed, batch)[batch['audio_mask']].view(2, 7, 48)
    assert torch.equal(after[0], prefix[0])
    assert not torch.allclose(after[1, 4], prefix[1, 4]) and torch.equal(after[1, 5:], prefix[1, 5:])
    changed[0, 7 + 2, 1] += 1.0  # the siren (named first) moves right: its slot and the difference slot change
    after = model.embeds(changed, batch)[batch['audio_mask']].view(2, 7, 48)
    assert not torch.allclose(after[0, 4], prefix[0, 4]) and torch.equal(after[0, 5], prefix[0, 5])
    assert not torch.allclose(after[0, 6], prefix[0, 6])
    assert model.answer(audio, [[1, 5, 6], [1, 7]], pad_id=0, eos_id=2, max_new_tokens=3, named=named)


def test_named_sources_fit_and_from_true():
    """fit() standardises the named sounds' positions and their difference (unnamed classes do not count); from_true
    puts true positions in the encoder's units: a pair keeps the encoder's centre and takes the true difference at the
    encoder's spread of differences, a lone sound takes the true position at the encoder's mean and spread."""
    ns = bat.NamedSources(16)
    torch.manual_seed(0)
    named = torch.tensor([[0, 1], [2, -1]] * 50)
    true = torch.zeros(100, 4, 5)
    true[:, :3] = torch.cat([torch.ones(100, 3, 1), torch.randn(100, 3, 4) * 2 + 1], -1)
    enc = true.clone()
    enc[..., 1:] = true[..., 1:] * 0.1 - 0.3  # squeezed toward the mean and shifted
    enc[:, 3, 1:] = 100.0  # a class never named: no effect on the statistics
    ns.fit(enc, named, true)
    mean, std, dstd = bat.named_spread(enc[:, :3], named)
    assert torch.allclose(ns.mean, mean) and torch.allclose(ns.scale, std) and torch.allclose(ns.diff_scale, dstd)
    assert ns.scale.max() < 1 and ns.true_scale.min() > 1 and torch.allclose(ns.true_diff_scale, dstd * 10)
    out = ns.from_true(enc, true, named)  # enc is an exact affine copy of true: from_true gives it back
    assert torch.allclose(out, enc, atol=1e-4)
    moved = true.clone()
    moved[0, 0, 1] += 2.0  # item 0's first sound further right (true units): the difference grows by 0.2 encoder units
    out = ns.from_true(enc, moved, named)
    assert torch.allclose(out[0, 0, 1] - enc[0, 0, 1], torch.tensor(0.1), atol=1e-4)
    assert torch.allclose(out[0, 1, 1] - enc[0, 1, 1], torch.tensor(-0.1), atol=1e-4)  # the centre stays the encoder's
    assert torch.equal(out[:, 3], enc[:, 3]) and torch.equal(out[..., 0], enc[..., 0])  # unnamed rows, probabilities
    slots = ns(enc, named[:2])
    assert slots.shape == (2, 3, 16) and torch.isfinite(slots).all()
    mean, std, dstd = bat.named_spread(enc, torch.tensor([[2, -1]] * 5))  # no pairs: the difference spread stays 1
    assert torch.equal(dstd, torch.ones(4)) and torch.allclose(mean, enc[:5, 2, 1:].mean(0))


def test_true_rows():
    """A perfect encoder's class rows from a QA item's targets: [1, right, front, up, distance / 2] per source."""
    rec = {'targets': [{'labels': ['Wind'], 'azimuth': 90, 'elevation': 0, 'distance': 3.0},
                       {'labels': ['Bell', 'Chime'], 'azimuth': 180, 'elevation': 90, 'distance': 1.0}]}
    rows = bat.true_rows([rec, {'targets': []}], ['Bell', 'Wind', 'Siren'])
    assert rows.shape == (2, 3, 5) and (rows[1] == 0).all() and (rows[0, 2] == 0).all()
    assert torch.allclose(rows[0, 1], torch.tensor([1.0, 0.0, 1.0, 0.0, 1.5]), atol=1e-6)  # in front, 3 m
    assert torch.allclose(rows[0, 0], torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5]), atol=1e-6)  # straight above, 1 m


def test_trainable_state_only_trainable():
    model = tiny_bat()
    model.llm.requires_grad_(False)
    keys = set(bat.trainable_state(model))
    assert keys and all(k.startswith('projector.') for k in keys)
