"""bat.py: Q-Former shapes, the prompt template, batch layout / label masking, padding invariance, answering."""
import torch

import bat
import llama


def tiny_bat(n_query=4, enc_dim=24, vocab=40, projector='qformer'):
    torch.manual_seed(0)
    qa = bat.QFormerArgs(n_layers=2, n_query=n_query, dim=32, n_heads=4, ffn_dim=64, encoder_dim=enc_dim,
                         llm_dim=48, dropout=0.0, projector=projector)
    lm = llama.Transformer(llama.ModelArgs(dim=48, n_layers=2, n_heads=4, vocab_size=vocab, multiple_of=16,
                                           max_seq_len=64))
    return bat.BAT(bat.make_projector(qa), lm).eval()


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


def test_prefix_is_the_projector_output():
    """The LLM's audio slots hold the projector's output of the encoder tokens and nothing else; the other slots are
    the text embeddings."""
    model = tiny_bat()
    audio = torch.randn(2, 9, 24)
    batch = bat.collate([[1, 5, 6], [1, 7]], [[8, 2], [9, 2]], 4, 0)
    emb = model.embeds(audio, batch)
    assert torch.allclose(emb[batch['audio_mask']].view(2, 4, 48), model.projector(audio), atol=1e-6)
    text = ~batch['audio_mask']
    assert torch.equal(emb[text], model.llm.embed(batch['tokens'])[text])
