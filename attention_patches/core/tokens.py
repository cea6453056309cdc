"""Where a prompt's words land in the text sequence attention sees: the one place tokens are found.

A family adapter names its text segments (`Family.text_groups`): e.g. SD3 attends to the CLIP tokens (CLIP-L
and -G share positions, concatenated on features), then the T5 tokens. Each segment is the first of its
tokenizer keys that the CLIP's tokenizer produces; segments follow each other in the sequence, each as long as
its tokens (77 per CLIP chunk).
"""
TOKENIZER_ATTRS = {"l": "clip_l", "g": "clip_g", "t5xxl": "t5xxl"}


def segments(tokenized: dict, family):
    """[(key, chunks of token ids)] of the family's text segments present in a tokenizer output, in order."""
    out = []
    for names in family.text_groups:
        for name in names:
            if name in tokenized:
                out.append((name, [[t for t, *_ in chunk] for chunk in tokenized[name]]))
                break
    return out


def _find(seq, sub):
    if not sub:
        return []
    out = []
    for i in range(len(seq) - len(sub) + 1):
        if seq[i:i + len(sub)] == sub:
            out += range(i, i + len(sub))
    return out


def subject_positions(clip, prompt: str, subject: str, family, who: str):
    """Positions of every occurrence of the subject's tokens (any number of them) in the prompt's text sequence,
    over all the family's segments (consumers drop positions past the model's text length)."""
    if not subject.strip():
        raise ValueError(f"{who}: subject is empty; write the word(s) of the prompt that name the new object.")
    tokens, alone, empty = (dict(segments(clip.tokenize(t), family)) for t in (prompt, subject, ""))
    if not tokens:
        raise ValueError(f"{who}: this CLIP has no tokenizer for {family.label}; load the model's own text encoders.")
    positions, base = [], 0
    for key, chunks in tokens.items():
        special = {t for chunk in empty[key] for t in chunk}
        want = [t for chunk in alone[key] for t in chunk if t not in special]
        flat = [t for chunk in chunks for t in chunk]
        positions += [base + p for p in _find(flat, want)]
        base += len(flat)
    if not positions:
        raise ValueError(f"{who}: the subject \"{subject}\" does not appear in the prompt \"{prompt}\"; write it "
                         "exactly as in the prompt (e.g. prompt 'a dog on the sofa', subject 'dog').")
    return sorted(set(positions))


def token_count(clip, prompt: str) -> int:
    """How many context tokens the prompt itself makes in its first segment (77 per CLIP chunk)."""
    tokens = clip.tokenize(prompt)
    key = "l" if "l" in tokens else next(iter(tokens))
    return sum(len(chunk) for chunk in tokens[key])


def _content(chunks, start, end, limit=None):
    """(content positions, position of the end token after the last content token, length) over the chunks."""
    content, eot, off = [], None, 0
    for chunk in chunks:
        first_end = next((i for i, t in enumerate(chunk) if t == end), len(chunk))
        body = [off + i for i in range(len(chunk)) if i < first_end and not (start is not None and chunk[i] == start)]
        if body or not content:
            eot = off + first_end if first_end < len(chunk) else None
        content += body
        off += len(chunk)
    return (content if limit is None else content[:limit]), eot, off


def prompt_positions(clip, text: str, suffix: str, family, text_len: int, who: str):
    """HD-Painter's T: positions of the bare prompt's tokens plus the end token of the full prompt (official:
    token_idx = range(1, EOT(prompt)) + [EOT(full prompt)]), in the text sequence of length `text_len`."""
    full = f"{text}, {suffix}" if suffix.strip() else text
    bare, whole = segments(clip.tokenize(text), family), segments(clip.tokenize(full), family)
    tk = clip.tokenizer
    ends = []
    for key, _ in whole:
        sub = getattr(tk, TOKENIZER_ATTRS.get(key, key), None)
        ends.append((getattr(sub, "start_token", None), getattr(sub, "end_token", 49407 if key in ("l", "g") else 1)))
    # SD3 may run with CLIP only, T5 only or both: keep the segments whose length is the conditioning's
    lengths = [sum(len(c) for c in chunks) for _, chunks in whole]
    picks = ([0, 1], [0], [1]) if len(whole) == 2 else ([0],)
    chosen = next((p for p in picks if all(i < len(whole) for i in p) and sum(lengths[i] for i in p) == text_len),
                  None)
    if chosen is None:
        raise ValueError(f"{who}: the clip's tokens ({'+'.join(map(str, lengths))}) do not match the encoded prompt "
                         f"({text_len} tokens); connect the CLIP that belongs to this model.")
    tokens, off = [], 0
    for i in chosen:
        start, end = ends[i]
        bare_content, _, _ = _content(bare[i][1], start, end)
        content, eot, seg_len = _content(whole[i][1], start, end, limit=len(bare_content))
        tokens += [off + p for p in content] + ([off + eot] if eot is not None and content else [])
        off += seg_len
    if not tokens:
        raise ValueError(f"{who}: the prompt has no tokens; describe what to paint in the hole (e.g. \"a red hat\").")
    return tuple(sorted(set(tokens)))
