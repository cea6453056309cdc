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


def _ids(clip, text: str, key: str) -> list:
    """The token ids of `text` in one tokenizer output, chunks joined."""
    return [t for chunk in clip.tokenize(text)[key] for t, *_ in chunk]


def _first_difference(a: list, b: list, start: int = 0) -> int:
    i = start
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    return i


def _added(before: list, after: list, longer: list) -> range:
    """Positions of the tokens a piece of text adds to a prompt prefix: `before` (the prefix), `after` (prefix +
    piece) and `longer` (prefix + piece + another word) are token lists of one tokenizer. The piece starts where
    `after` leaves `before` and ends where `longer` leaves `after`, so padding, end tokens and chat templates
    around the text never count; subword tokenizers merge a word with the space before it, so the piece is never
    tokenized on its own."""
    start = _first_difference(before, after)
    return range(start, _first_difference(after, longer, start))


def _occurrences(prompt: str, subject: str) -> list:
    """Character offsets of the subject in the prompt (exact case first, else any case)."""
    for text, sub in ((prompt, subject), (prompt.lower(), subject.lower())):
        found, i = [], text.find(sub)
        while i >= 0:
            found.append(i)
            i = text.find(sub, i + len(sub))
        if found:
            return found
    return []


def subject_positions(clip, prompt: str, subject: str, family, who: str):
    """Positions of every occurrence of the subject's tokens in the tokenized prompt, over all the family's
    segments in sequence order (consumers align them with the text sequence through the family adapter and drop
    positions past it)."""
    subject = subject.strip()
    if not subject:
        raise ValueError(f"{who}: subject is empty; write the word(s) of the prompt that name the new object.")
    full = segments(clip.tokenize(prompt), family)      # a segment may repeat (HiDream's Llama prompt)
    if not full:
        raise ValueError(f"{who}: this CLIP has no tokenizer for {family.label}; load the model's own text encoders.")
    positions, base = [], 0
    for key, chunks in full:
        flat = [t for chunk in chunks for t in chunk]
        for at in _occurrences(prompt, subject):
            end = at + len(subject)
            before, after, longer = (_ids(clip, t, key) for t in (prompt[:at], prompt[:end], prompt[:end] + " and"))
            span = _added(before, after, longer)
            if span and after[span.start:span.stop] == flat[span.start:span.stop]:
                positions += [base + p for p in span]
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
    if family.text_alignment == "end" or (whole and _end_token(tk, whole[0][0]) is None):
        return _llm_prompt_positions(clip, text, full, whole, family, text_len, who)
    ends = []
    for key, _ in whole:
        sub = getattr(tk, TOKENIZER_ATTRS.get(key, key), None)
        ends.append((getattr(sub, "start_token", None), _end_token(tk, key)))
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


def _end_token(tokenizer, key):
    """The end token of one tokenizer output (None: a language model's, which has none)."""
    sub = getattr(tokenizer, TOKENIZER_ATTRS.get(key, key), None)
    return getattr(sub, "end_token", 49407 if key in ("l", "g") else 1)


def _llm_prompt_positions(clip, text, full, whole, family, text_len, who):
    """T for a language-model encoder (chat template, no end token): the tokens the bare prompt adds to the empty
    one inside the template, lined up with the encoded sequence (the encoder may drop the template's prefix)."""
    if not whole:
        raise ValueError(f"{who}: this CLIP has no tokenizer for {family.label}; load the model's own text encoders.")
    key, chunks = whole[0]
    flat = [t for chunk in chunks for t in chunk]
    span = _added(*(_ids(clip, t, key) for t in ("", text, text + " and")))
    tokens = [q for q in (family.text_position(p, len(flat), text_len) for p in span) if 0 <= q < text_len]
    if not tokens:
        raise ValueError(f"{who}: the prompt has no tokens; describe what to paint in the hole (e.g. \"a red hat\").")
    return tuple(tokens)
