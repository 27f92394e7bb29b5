import pytest
import torch

from nlp_lstm import (
    AttentionPooling,
    BiLSTMEncoder,
    CharCNN,
    CharLSTM,
    ClassifierHead,
    TaggingHead,
    TokenEmbedder,
)


def ragged(batch=4, steps=7, dim=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7, 3, 5, 1])[:batch]
    inputs = torch.randn(batch, steps, dim, generator=gen)
    mask = torch.arange(steps).unsqueeze(0) < lengths.unsqueeze(1)
    return inputs, lengths, mask


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("pooling", [None, "last", "mean", "max", "attention"])
def test_encoder_shapes_and_padding_invariance(cell, pooling):
    torch.manual_seed(0)
    encoder = BiLSTMEncoder(6, 5, num_layers=2, dropout=0.0, cell=cell, pooling=pooling).eval()
    inputs, lengths, mask = ragged()
    out = encoder(inputs, lengths)
    assert out.states.shape == (4, 7, 10) and encoder.output_size == 10
    assert torch.all(out.states[~mask] == 0)
    noisy = inputs.clone()
    noisy[~mask] = 100.0  # garbage in the padding changes nothing
    again = encoder(noisy, lengths)
    torch.testing.assert_close(again.states, out.states)
    if pooling is None:
        assert out.pooled is None
    else:
        assert out.pooled.shape == (4, 10)
        torch.testing.assert_close(again.pooled, out.pooled)
    # a sequence encoded alone equals the same sequence in the batch
    alone = encoder(inputs[1:2, :3], lengths[1:2])
    torch.testing.assert_close(alone.states[0], out.states[1, :3], atol=1e-6, rtol=1e-5)


def test_last_pooling_is_final_forward_and_first_backward_state():
    encoder = BiLSTMEncoder(6, 5, pooling="last").eval()
    inputs, lengths, _ = ragged()
    out = encoder(inputs, lengths)
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(out.pooled[b, :5], out.states[b, n - 1, :5])
        torch.testing.assert_close(out.pooled[b, 5:], out.states[b, 0, 5:])


def test_attention_pooling_masks_padding_and_weights_sum_to_one():
    pooling = AttentionPooling(4, 3)
    states = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    pooled, weights = pooling(states, mask)
    assert torch.all(weights[~mask] == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2))
    torch.testing.assert_close(pooled, torch.einsum("bt,bth->bh", weights, states))
    changed = states.clone()
    changed[0, 3:] = 50.0
    torch.testing.assert_close(pooling(changed, mask)[0][0], pooled[0])


def test_char_encoders_shapes_and_padding():
    chars = torch.tensor([[0, 0, 0, 0], [3, 4, 5, 0], [6, 7, 0, 0]])
    cnn = CharCNN(10, 6, 8, 3)
    out = cnn(chars)
    assert out.shape == (3, 8) and torch.all(out[0] == 0)
    longer = torch.cat([chars, torch.zeros(3, 3, dtype=torch.long)], 1)
    torch.testing.assert_close(cnn(longer), out)
    lstm = CharLSTM(10, 6, 4)
    out = lstm(chars)
    assert out.shape == (3, 8)
    torch.testing.assert_close(lstm(chars, torch.tensor([0, 3, 2])), out)  # lengths from collate
    torch.testing.assert_close(lstm(longer), out)


def test_token_embedder_joins_words_and_chars_with_gradients():
    vectors = torch.randn(12, 5)
    vectors[0] = 0
    embedder = TokenEmbedder(
        vectors, freeze=False, num_chars=10, char="cnn", char_dim=4, char_hidden=3, dropout=0.0
    )
    words = torch.tensor([[2, 3, 0]])
    chars = torch.tensor([[0, 0], [3, 4], [5, 0]])
    char_index = torch.tensor([[1, 2, 0]])
    out = embedder(words, chars, char_index)
    assert out.shape == (1, 3, 8) and embedder.output_size == 8
    torch.testing.assert_close(out[0, 0, :5], vectors[2])
    out.sum().backward()
    assert embedder.words.weight.grad[2].abs().sum() > 0
    assert embedder.chars.conv.weight.grad.abs().sum() > 0
    frozen = TokenEmbedder(vectors, freeze=True, char="none")
    assert not frozen.words.weight.requires_grad and frozen.output_size == 5
    with pytest.raises(ValueError, match="char"):
        embedder(words)


def test_static_channel_keeps_the_pretrained_vectors_while_the_tuned_copy_moves():
    vectors = torch.randn(12, 5)
    embedder = TokenEmbedder(
        vectors.clone(),
        num_chars=10,
        char="cnn",
        char_dim=4,
        char_hidden=3,
        dropout=0.0,
        static_channel=True,
    )
    assert embedder.output_size == 5 + 5 + 3
    words = torch.tensor([[2, 3, 7]])
    chars = torch.tensor([[0, 0], [3, 4], [5, 0], [6, 1]])
    char_index = torch.tensor([[1, 2, 3]])
    optimizer = torch.optim.SGD([p for p in embedder.parameters() if p.requires_grad], lr=1.0)
    embedder(words, chars, char_index).pow(2).sum().backward()
    optimizer.step()
    out = embedder(words, chars, char_index)
    torch.testing.assert_close(out[0, :, 5:10], vectors[[2, 3, 7]])  # [tuned | static | chars]
    assert not torch.allclose(out[0, :, :5], vectors[[2, 3, 7]])
    torch.testing.assert_close(out[0, :, :5], embedder.words.weight[[2, 3, 7]])
    # words added after training get the same row in both channels
    embedder.extend_vocab(torch.ones(2, 5))
    grown = embedder(torch.tensor([[12, 13]]), chars, torch.tensor([[1, 2]]))
    torch.testing.assert_close(grown[0, :, :10], torch.ones(2, 10))
    assert not embedder.static.weight.requires_grad


def test_static_swap_shows_pretrained_rows_in_the_tuned_channel_only_in_training():
    embedder = TokenEmbedder(
        torch.randn(50, 3), char="none", dropout=0.0, static_channel=True, static_swap=0.3
    )
    with torch.no_grad():
        embedder.words.weight[1:] += 1.0  # the tuned rows moved away from the pretrained ones
    words = torch.randint(1, 50, (4, 200))
    torch.manual_seed(0)
    out = embedder(words)
    swapped = (out[..., :3] == out[..., 3:]).all(-1).float().mean()
    assert 0.25 < swapped < 0.35
    out.sum().backward()  # the unswapped words still train their tuned rows
    assert embedder.words.weight.grad[1:].abs().sum(-1).gt(0).any()
    embedder.eval()
    out = embedder(words)
    assert not (out[..., :3] == out[..., 3:]).all(-1).any()
    with pytest.raises(ValueError, match="static_channel"):
        TokenEmbedder(torch.randn(5, 3), char="none", static_swap=0.1)


def test_word_dropout_only_in_training():
    embedder = TokenEmbedder(torch.randn(50, 3), char="none", dropout=0.0, word_dropout=0.5)
    words = torch.randint(2, 50, (4, 100))
    torch.manual_seed(0)
    embedder.train()
    dropped = embedder(words)
    unk = embedder.words.weight[1]
    share = (dropped == unk).all(-1).float().mean()
    assert 0.4 < share < 0.6
    embedder.eval()
    assert not (embedder(words) == unk).all(-1).any()


@pytest.mark.parametrize("crf", [True, False])
def test_tagging_head_loss_and_decode(crf):
    torch.manual_seed(0)
    head = TaggingHead(6, 4, crf=crf)
    states = torch.randn(3, 5, 6, requires_grad=True)
    tags = torch.randint(4, (3, 5))
    mask = torch.arange(5).unsqueeze(0) < torch.tensor([5, 2, 4]).unsqueeze(1)
    loss = head.loss(states, tags, mask)
    assert loss.dim() == 0 and loss > 0
    loss.backward()
    assert states.grad[~mask].abs().sum() == 0 and states.grad[mask].abs().sum() > 0
    decoded = head.decode(states, mask)
    assert decoded.shape == (3, 5) and torch.all(decoded[~mask] == 0)


def test_pytorch_crf_head_agrees_with_fast_head():
    torch.manual_seed(0)
    fast = TaggingHead(6, 4, crf=True, crf_impl="fast")
    reference = TaggingHead(6, 4, crf=True, crf_impl="pytorch-crf")
    reference.load_state_dict(fast.state_dict())
    states = torch.randn(3, 5, 6)
    tags = torch.randint(4, (3, 5))
    mask = torch.arange(5).unsqueeze(0) < torch.tensor([5, 2, 4]).unsqueeze(1)
    torch.testing.assert_close(fast.loss(states, tags, mask), reference.loss(states, tags, mask))
    assert torch.equal(fast.decode(states, mask), reference.decode(states, mask))


def test_classifier_head():
    head = ClassifierHead(6, 3, hidden_size=4, dropout=0.1)
    assert head(torch.randn(2, 6)).shape == (2, 3)


@pytest.mark.parametrize("char", ["cnn", "lstm"])
def test_tagging_batches_padded_to_multiples_give_the_same_loss_gradients_and_tags(char):
    # data.pad_multiple rounds batch shapes up (fewer distinct shapes: a heap that does not
    # fragment); the padding must change nothing the model computes
    from collections import Counter

    from nlp_lstm.data.vectors import EmbeddingsConfig, random_rows
    from nlp_lstm.data.vocab import Vocab
    from nlp_lstm.tasks.ner import BiLSTMCRFTagger, NERModelConfig, predict
    from nlp_lstm.tasks.words import word_split
    from tests.conftest import step_results, toy_ner_sentences

    sentences = toy_ner_sentences(12, seed=3)
    tokens = [[t for t, _ in s] for s in sentences]
    gold = [[g for _, g in s] for s in sentences]
    tags = Vocab(sorted({g for s in gold for g in s}), specials=())
    words = Vocab.from_counts(Counter(t for s in tokens for t in s))
    chars = Vocab.from_counts(Counter(c for s in tokens for t in s for c in t))
    torch.manual_seed(0)
    config = NERModelConfig(
        hidden_size=8, char=char, char_dim=4, char_hidden=4, dropout=0.0, word_dropout=0.0
    )
    model = BiLSTMCRFTagger(
        config, random_rows(len(words), 6), EmbeddingsConfig(), len(chars), tags.itos, "iob2"
    )
    tag_ids = [tags.encode(g) for g in gold]
    results = []
    for multiple in (1, 8):
        batch = word_split(tokens, tag_ids, words, chars, multiple).collate(list(range(12)))
        if multiple == 1:
            assert batch.words.shape[1] == max(len(t) for t in tokens)
            assert batch.chars.shape[0] == 1 + len({t for s in tokens for t in s})
        else:
            assert batch.words.shape[1] % 8 == 0 and batch.chars.shape[1] % 8 == 0
            assert batch.chars.shape[0] % 32 == 0
        results.append(step_results(model, batch, predict))
    (loss1, n1, grads1, tags1), (loss8, n8, grads8, tags8) = results
    assert n1 == n8 and tags1 == tags8
    torch.testing.assert_close(loss8, loss1)
    assert len(grads1) == len(grads8)
    for a, b in zip(grads1, grads8, strict=True):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5)
