import torch
import torch.nn.functional as F
from torch import nn


class Embeddings(nn.Module):
    def __init__(self, d_model, vocab):
        super().__init__()
        self.lut = nn.Embedding(vocab, d_model)

    def forward(self, x):
        return self.lut(x)


class Core(nn.Module):
    def __init__(self, d_model, vocab):
        super().__init__()
        self.tgt_embed = nn.Sequential(Embeddings(d_model, vocab))
        self.att = nn.Linear(d_model, d_model)


class EncoderDecoder(nn.Module):
    """Stand-in decoder with the official key names and the official habit of calling .cuda()."""

    def __init__(self, args, tokenizer):
        super().__init__()
        self.args = args
        self.vocab_size = tokenizer.get_vocab_size()
        tgt_vocab = self.vocab_size + 1
        self.att_embed = nn.Linear(args.d_vf, args.d_model)
        self.model = Core(args.d_model, tgt_vocab)
        self.logit = nn.Linear(args.d_model, tgt_vocab)

    def forward(self, fc_feats, att_feats, targets=None, mode="sample"):
        if mode != "sample":
            raise NotImplementedError("the stand-in only samples")
        memory = self.att_embed(att_feats)  # (B, S, d)
        batch = att_feats.size(0)
        it = torch.zeros(batch, dtype=torch.long)
        it = it.cuda()  # the official caption_model.py does this unconditionally
        seq = torch.zeros(batch, self.args.max_seq_length, dtype=torch.long).cuda()
        done = torch.zeros(batch, dtype=torch.bool, device=memory.device)
        for t in range(self.args.max_seq_length):
            query = self.model.att(self.model.tgt_embed(it))  # (B, d)
            weights = F.softmax((memory @ query[:, :, None]).squeeze(-1), dim=-1)
            state = (weights[:, :, None] * memory).sum(1) + query
            logprobs = F.log_softmax(self.logit(state), dim=-1)
            if t == 0:
                logprobs[:, 0] = -1e9  # write at least one word
            it = logprobs.argmax(-1)
            it = torch.where(done, torch.zeros_like(it), it)
            seq[:, t] = it
            done |= it == 0
            if bool(done.all()):
                break
        return seq, logprobs
