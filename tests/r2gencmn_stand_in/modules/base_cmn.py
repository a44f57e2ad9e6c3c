import torch
import torch.nn.functional as F
from torch import nn


class MultiThreadMemory(nn.Module):
    """Stand-in for R2GenCMN's memory querying: the official parameter names (linears.0..3), top-k reading."""

    def __init__(self, h, d_model, topk=32):
        super().__init__()
        self.h = h
        self.topk = topk
        self.linears = nn.ModuleList([nn.Linear(d_model, d_model) for _ in range(4)])

    def forward(self, query, key, value):
        q, k, v = self.linears[0](query), self.linears[1](key), self.linears[2](value)
        scores = q @ k.transpose(-2, -1)
        top, index = scores.topk(min(self.topk, scores.size(-1)), dim=-1)
        rows = v.unsqueeze(1).expand(-1, q.size(1), -1, -1)
        picked = torch.gather(rows, 2, index[..., None].expand(-1, -1, -1, v.size(-1)))
        return self.linears[3]((F.softmax(top, dim=-1)[..., None] * picked).sum(2))


class Embeddings(nn.Module):
    def __init__(self, d_model, vocab):
        super().__init__()
        self.lut = nn.Embedding(vocab, d_model)

    def forward(self, x):
        return self.lut(x)


class Transformer(nn.Module):
    def __init__(self, d_model, vocab, cmn):
        super().__init__()
        self.tgt_embed = nn.Sequential(Embeddings(d_model, vocab))
        self.cmn = cmn


class BaseCMN(nn.Module):
    """Stand-in with the official key names (att_embed, model.tgt_embed.0.lut, cmn / model.cmn, logit,
    memory_matrix [cmm_size, cmm_dim]), the (sequences, log-probs) return and the official .cuda() habit."""

    def __init__(self, args, tokenizer):
        super().__init__()
        self.args = args
        self.vocab_size = tokenizer.get_vocab_size()
        tgt_vocab = self.vocab_size + 1
        self.att_embed = nn.Sequential(nn.Linear(args.d_vf, args.d_model), nn.ReLU())
        self.cmn = MultiThreadMemory(args.num_heads, args.d_model, topk=args.topk)
        self.model = Transformer(args.d_model, tgt_vocab, self.cmn)
        self.logit = nn.Linear(args.d_model, tgt_vocab)
        self.memory_matrix = nn.Parameter(torch.FloatTensor(args.cmm_size, args.cmm_dim))
        nn.init.normal_(self.memory_matrix, 0, 1 / args.cmm_dim)

    def forward(self, fc_feats, att_feats, targets=None, mode="sample", update_opts={}):  # noqa: B006
        if mode != "sample":
            raise NotImplementedError("the stand-in only samples")
        att = self.att_embed(att_feats)
        memory = self.memory_matrix.unsqueeze(0).expand(att.size(0), -1, -1)
        att = att + self.cmn(att, memory, memory)
        batch = att.size(0)
        it = torch.zeros(batch, dtype=torch.long).cuda()  # as the official beam search does
        seq = torch.zeros(batch, self.args.max_seq_length, dtype=torch.long).cuda()
        seq_logprobs = torch.zeros(batch, self.args.max_seq_length, self.vocab_size + 1).cuda()
        done = torch.zeros(batch, dtype=torch.bool, device=att.device)
        for t in range(self.args.max_seq_length):
            query = self.model.tgt_embed(it)
            weights = F.softmax((att @ query[:, :, None]).squeeze(-1), dim=-1)
            logprobs = F.log_softmax(self.logit((weights[:, :, None] * att).sum(1) + query), dim=-1)
            if t == 0:
                logprobs[:, 0] = -1e9  # write at least one word
            it = torch.where(done, torch.zeros_like(it), logprobs.argmax(-1))
            seq[:, t], seq_logprobs[:, t] = it, logprobs
            done |= it == 0
            if bool(done.all()):
                break
        return seq, seq_logprobs
