"""
SpatialSoundQA-style question/answer files from a sources list (sources.py) and rendered IRs (render.py).

Writes `<out_dir>/{train,eval}.jsonl` (official fields audio_id, reverb_id, audio_id2, reverb_id2, question_id,
question_type, question, answer, plus our `targets`: one dict per source, the source the question asks about
(or the X of "is X ... Y") first), `<out_dir>/meta.json` (audio_root, reverb_root and sources, relative to out_dir;
classes, stages, counts, margins) and `<out_dir>/summary.md`. Answers follow docs/conventions.md exactly. No audio is
read: items name clips and IRs, and the training scripts mix them on the fly (features.qa_waveforms: each source
convolved with its own IR, averaged).

Rules (all documented in meta.json):
- two-source items: same room and same listener (sensor_position), two different IRs whose sources are at least
  `min_separation_m` apart, and two clips with no label in common;
- relative questions only when clear by a margin: lateral angle asin(dx/|d|), front angle asin(-dz/|d|) or
  elevation differ by >= `angle_margin_deg`; distances differ by >= `distance_margin_m`; "the sound on your left"
  needs the two sources on opposite sides, each at least `side_margin_deg` from the dividing plane;
- Yes/No answers exactly 50/50 (binary counts are rounded up to even), the No items also clear by the margin;
- eval items use only eval clips, eval IRs (rooms) and the eval-only phrasings; the same seed gives identical files.
- reasoning=True (not the paper's): the D and E answers first say where each sound is heard, with the angles that
  decide every relation asked, then conclude (OWL, arXiv 2509.26140), e.g.
  `the dog: left 30, front 60, above 10; 2m. the bell: right 20, behind 40, below 30; 4.5m. So: Yes`;
  a D answer is its statements, the asked sound first. eval.py reads the conclusion and the statements.
- word_noise=p (not the paper's): each word of a train question's template (never a placeholder) is dropped with
  probability p/2 or swapped for a word of another train template with probability p/2, so that a from-scratch LLM
  learns to read a question whose words it does not all know; eval questions and all answers stay as they are.
Curriculum stages select by question_type: meta.json "stages" = {"1": A+B, "2": A-D, "3": A-E}.

Run (CPU only):
    python make_qa.py config/demo_qa.py
    python make_qa.py --sources=out/sources/sources.jsonl --render_dir=out/rirs --out_dir=out/qa
"""
import collections
import math
import os
import time

import numpy as np

import common

QUESTION_TYPES = list(common.TYPE_LETTER)  # A, B, C, D, then the five E kinds
STAGES = {str(k): common.stage_types(k) for k in (1, 2, 3)}  # written to meta.json for the reader
BINARY_TYPES = ('MIXUP_DIRECTION', 'MIXUP_DISTANCE_BOTH')

# more training phrasings shared by the relation questions ({rel}: binary; {choice}: the non-binary direction)
RELATIONAL = [
    'Is the {x} placed {rel} the {y}?', 'Do you hear the {x} {rel} the {y}?', 'Listen: is the {x} {rel} the {y}?',
    'Is the source of the {x} {rel} the source of the {y}?', 'Is the {x} situated {rel} the {y}?',
    'From what you hear, is the {x} {rel} the {y}?', 'Is the {x} found {rel} the {y}?',
    'Check the audio: is the {x} {rel} the {y}?', 'Does it sound like the {x} is {rel} the {y}?',
    'Is the {x} sound {rel} the {y} sound?', 'Compared with the {y}, is the {x} {rel} it?',
    'Say whether the {x} is {rel} the {y}.']

# phrasings (20 train + 3 eval-only per type): {x}, {y} = sound names; {where}, {rel}, {choice}, {cmp} = the phrases
# below. Many train phrasings let a from-scratch LLM learn the words of a question, not 8 whole sentences.
TEMPLATES = {
    'CLASSIFICATION': {'train': [
        'What sound events can you hear in this audio clip?', 'Identify the sound events in the audio.',
        'Enumerate the sound occurrences in the audio clip.', 'What is making the sound in this recording?',
        'Which sound classes are present in the audio?', 'Name the sounds you hear.', 'What kind of sound is this?',
        'Tell me what sounds are in this clip.',
        'What do you hear?', 'Which sound is playing?', 'What is this sound?',
        'Put a name to the sound events of this clip.', 'Classify the audio: what sound is it?',
        'What category of sound is in the audio?', 'Listen and name the sound source.',
        'Which sound event does this clip contain?', 'What produces the sound you are hearing?',
        'Recognise the sound in this audio.', 'What type of sound can be heard here?',
        'Give the class of the sound in the recording.'], 'eval': [
        'Describe the category of the sound you are listening to.', 'Can you label the sound in this recording?',
        'What sound source does this audio contain?']},
    'DOA': {'train': [
        'Where is the sound coming from, and how far away is it?', 'In which direction and at what distance is the sound source?',
        'Locate the sound: give its direction and distance.', 'From which direction does the sound come, and how far is it?',
        'Estimate the direction of arrival and the distance of the sound.',
        'Where is the sound source located relative to you, and how far?',
        'Give the position of the sound: left or right, front or behind, above or below, and its distance.',
        'How far away is the sound and from which direction does it reach you?',
        'Where is the sound?', 'Where does the sound come from and how distant is it?',
        'Tell me the direction and distance of the sound source.', 'Which direction is the sound in, and how far?',
        'What is the position of the sound source and how far away is it?',
        'Localise the sound and say how far it is.', 'How far is the sound, and where is it?',
        'Describe where the sound is located and its distance.',
        'Find the sound source: its direction and its distance.',
        'Is the sound to the left or right, in front or behind, above or below, and how far?',
        'Point out the direction of the sound and the distance to it.',
        'From where, and from how far, does the sound reach you?'], 'eval': [
        'Pinpoint where this sound originates and its distance from you.', 'Which way is the sound, and how many meters away?',
        "Determine the sound's direction and range."]},
    'MIXUP_SINGLE_CLASSIFICATION': {'train': [
        'What is the sound {where}?', 'Identify the sound source {where}.', 'Which sound do you hear {where}?',
        'What is making the sound {where}?', 'Tell me the class of the sound {where}.',
        'Two sounds are playing. What is the one {where}?', 'Of the two sounds, which one is {where}?',
        'What kind of sound is located {where}?',
        'Name the sound {where}.', 'What do you hear {where}?', 'Which sound event is {where}?',
        'Identify the sound that is {where}.', 'What sound is playing {where}?',
        'Tell me what is making noise {where}.', 'Label the sound source {where}.',
        'Two sources are mixed. What is {where}?', 'Listen to the mix: which sound is {where}?',
        'What class does the sound {where} belong to?', 'Recognise the sound {where}.',
        'What is the sound event heard {where}?'], 'eval': [
        'Classify the sound source positioned {where}.', 'Among the sounds in this mix, what can be heard {where}?',
        'Please name the sound event {where}.']},
    'MIXUP_SINGLE_DOA': {'train': [
        'Where is the sound of the {x} coming from, and how far away is it?',
        'In which direction and at what distance is the {x}?', 'Locate the {x}: give its direction and distance.',
        'Two sounds are playing. Where is the {x} and how far is it?',
        'From which direction does the {x} sound come, and how far is it?', 'Give the direction and distance of the {x}.',
        'How far away is the {x} and in which direction?', 'Estimate where the {x} is relative to you and its distance.',
        'Where is the {x}?', 'Where is the {x} and how far away?', 'Tell me the direction and distance of the {x}.',
        'What is the position of the {x} sound and its distance?', 'Localise the {x} and say how far it is.',
        'How far is the {x}, and where is it?', 'Find the {x}: its direction and its distance.',
        'Describe where the {x} is and how distant it is.',
        'Two sounds are mixed. Give the direction and distance of the {x}.',
        'Where does the sound of the {x} come from, and from how far?',
        'In the mix, where is the {x} located and how far is it?',
        'Point out the direction of the {x} and the distance to it.'],
        'eval': [
        'Pinpoint the position of the {x} sound and its range.', 'Which way is the {x}, and how many meters away?',
        'Determine the direction and distance of the sound of the {x}.']},
    'MIXUP_DIRECTION': {'train': [
        'Is the sound of the {x} {rel} the sound of the {y}?', 'Is the {x} {rel} the {y}?',
        'Would you say the {x} is {rel} the {y}?', 'Is the {x} sound located {rel} the {y} sound?',
        'Does the {x} come from a position {rel} the {y}?', 'Is it true that the {x} is {rel} the {y}?',
        'Answer yes or no: is the {x} {rel} the {y}?', 'Judging by the audio, is the {x} {rel} the {y}?'] + RELATIONAL, 'eval': [
        'Would the {x} be heard {rel} the {y}?', 'Can you confirm that the {x} is positioned {rel} the {y}?',
        'Tell me whether the {x} is {rel} the {y}.']},
    'MIXUP_DISTANCE_BOTH': {'train': [
        'Is the sound of the {x} {rel} the sound of the {y}?', 'Is the {x} {rel} the {y}?',
        'Would you say the {x} is {rel} the {y}?', 'Is the {x} sound source {rel} the {y} sound source?',
        'Is it true that the {x} is {rel} the {y}?', 'Answer yes or no: is the {x} {rel} the {y}?',
        'Judging by the audio, is the {x} {rel} the {y}?', 'Does the {x} seem {rel} the {y}?'] + RELATIONAL, 'eval': [
        'Can you confirm that the {x} is {rel} the {y}?', 'Based on what you hear, is the {x} positioned {rel} the {y}?',
        'Tell me whether the {x} is {rel} the {y}.']},
    'MIXUP_NONBINARY_DIRECTION': {'train': [
        'Is the {x} {choice} the {y}?', 'Is the sound of the {x} {choice} the sound of the {y}?',
        'Relative to the {y}, is the {x} {choice} it?', 'Is the {x} sound positioned {choice} the {y} sound?',
        'Would you place the {x} {choice} the {y}?', 'Tell me whether the {x} is {choice} the {y}.',
        'Judging by the audio, is the {x} {choice} the {y}?', 'Which is it: is the {x} {choice} the {y}?'] + [t.replace('{rel}', '{choice}') for t in RELATIONAL], 'eval': [
        'Can you tell if the {x} is {choice} the {y}?', 'Is the {x} located {choice} the {y}?',
        'Based on what you hear, is the {x} {choice} the {y}?']},
    'MIXUP_NONBINARY_DISTANCE': {'train': [
        'How far away is the sound of the {x} from the sound of the {y}?',
        'What is the distance between the {x} and the {y}?', 'How far apart are the {x} and the {y}?',
        'How many meters separate the {x} from the {y}?', 'Estimate the distance between the {x} sound and the {y} sound.',
        'How far is the {x} from the {y}?', 'What is the spacing between the {x} and the {y} sources?',
        'Tell me how far the {x} is from the {y}.',
        'How much distance is there between the {x} and the {y}?', 'What is the separation of the {x} and the {y}?',
        'How many meters is the {x} away from the {y}?', 'Give the distance from the {x} to the {y}.',
        'How close together are the {x} and the {y}?', 'Measure how far apart the {x} and the {y} are.',
        'What is the gap between the {x} sound and the {y} sound?', 'How distant is the {x} from the {y}?',
        'Tell me the distance separating the {x} and the {y}.', 'About how far is it from the {x} to the {y}?',
        'How far does the {x} sit from the {y}?', 'Between the {x} and the {y}, how large is the distance?'], 'eval': [
        'What distance lies between the {x} and the {y}?',
        'Roughly how far apart are the sounds of the {x} and the {y}?', 'Judge the separation between the {x} and the {y}.']},
    'MIXUP_NONBINARY_SOURCE': {'train': [
        'Which sound is {cmp}?', 'Of the two sounds, which one is {cmp}?', 'Which of the sound sources is {cmp}?',
        'Two sounds are playing. Which is {cmp}?', 'Which is {cmp}: the {x} or the {y}?',
        'Between the {x} and the {y}, which one is {cmp}?', 'What is the sound that is {cmp}?',
        'Identify the sound source that is {cmp}.',
        'Which one is {cmp}?', 'Which sound source sits {cmp}?', 'Of the {x} and the {y}, which is {cmp}?',
        'What is {cmp}: the {x} or the {y}?', 'Listen: which sound is {cmp}?', 'Say which sound is {cmp}.',
        'Which of the two is {cmp}?', 'Is the {x} or the {y} {cmp}?', 'Which sound event is {cmp}?',
        'Among the two sources, which one is {cmp}?', 'Pick the sound that is {cmp}: the {x} or the {y}.',
        'Which source do you hear {cmp}?'], 'eval': [
        'Tell me which of the two sounds is {cmp}.', 'Which one, the {x} or the {y}, is {cmp}?',
        'Name the sound that is {cmp}.']},
}

# the words of the train phrasings (placeholders left out): what word_noise swaps in; never an eval phrasing's word
TRAIN_WORDS = sorted({w for t in TEMPLATES.values() for q in t['train'] for w in q.split(' ') if '{' not in w})

# relation r(a, b): "a is <r> b", clear by a margin
DIRECTIONS = tuple(w for pair in common.WORD_PAIRS for w in pair)  # left, right, front, behind, above, below
OPPOSITE = {**{a: b for a, b in common.WORD_PAIRS + (('closer', 'farther'),)},
            **{b: a for a, b in common.WORD_PAIRS + (('closer', 'farther'),)}}
REL_PHRASE = {'left': 'to the left of', 'right': 'to the right of', 'front': 'in front of', 'behind': 'behind',
              'above': 'above', 'below': 'below', 'closer': 'closer to you than', 'farther': 'farther from you than'}
WHERE_PHRASE = {'left': 'on your left', 'right': 'on your right', 'front': 'in front of you', 'behind': 'behind you',
                'above': 'above you', 'below': 'below you'}
CHOICE_PHRASE = {'left': 'to the left or to the right of', 'front': 'in front of or behind', 'above': 'above or below'}
REASON_STEP_DEG = 10  # angles of reasoning answers in these steps (< angle_margin_deg: rounding keeps every order)
CMP_PHRASE = {'left': 'more to the left', 'right': 'more to the right', 'front': 'more to the front',
              'behind': 'more to the back', 'above': 'higher', 'below': 'lower', 'closer': 'closer to you',
              'farther': 'farther from you'}


def geometry(rir):
    """Unrounded angles (deg) and distance of one IR's source, for the margin tests."""
    dx, dy, dz = common.offset(rir['sensor_position'], rir['source_position'])
    dist = max(math.sqrt(dx * dx + dy * dy + dz * dz), 1e-9)
    return {'lat': math.degrees(math.asin(dx / dist)), 'front': math.degrees(math.asin(-dz / dist)),
            'elev': math.degrees(math.atan2(dy, math.hypot(dx, dz))), 'dist': dist,
            'pos': np.array(common.parse_xyz(rir['source_position']))}


def relation_pairs(rirs, margins):
    """{relation: [(i, j), ...]} over IR indices in the same room with the same listener: 'any' (separated
    sources), the 8 relative relations of OPPOSITE, and 'side_<w>' (i on side w, j on the opposite side)."""
    groups = collections.defaultdict(list)
    for i, r in enumerate(rirs):
        groups[(r['fname'].split('/')[0], common.format_xyz(common.parse_xyz(r['sensor_position'])))].append(i)
    pairs = collections.defaultdict(list)
    for key in sorted(groups):
        idx = np.array(groups[key])
        g = [geometry(rirs[i]) for i in idx]
        v = {k: np.array([x[k] for x in g]) for k in ('lat', 'front', 'elev', 'dist')}
        pos = np.stack([x['pos'] for x in g])
        sep = np.linalg.norm(pos[:, None] - pos[None], axis=-1) >= margins['min_separation_m']
        am, dm, sm = margins['angle_margin_deg'], margins['distance_margin_m'], margins['side_margin_deg']
        diff = {k: v[k][:, None] - v[k][None] for k in v}  # a minus b
        conds = {'any': sep, 'left': diff['lat'] <= -am, 'right': diff['lat'] >= am, 'front': diff['front'] >= am,
                 'behind': diff['front'] <= -am, 'above': diff['elev'] >= am, 'below': diff['elev'] <= -am,
                 'closer': diff['dist'] <= -dm, 'farther': diff['dist'] >= dm}
        side = {'left': v['lat'] <= -sm, 'right': v['lat'] >= sm, 'front': v['front'] >= sm,
                'behind': v['front'] <= -sm, 'above': v['elev'] >= sm, 'below': v['elev'] <= -sm}
        for w in DIRECTIONS:
            conds['side_' + w] = side[w][:, None] & side[OPPOSITE[w]][None]
        for name, c in conds.items():
            a, b = np.nonzero(c & sep)
            pairs[name] += [(int(idx[i]), int(idx[j])) for i, j in zip(a, b)]
    return pairs


def doa_answer(t):
    return f"{', '.join(t['direction'])}; {common.distance_words(t['distance'])}"


def heard(clip, rir):
    """One sound as a reasoning answer states it, e.g. 'the dog: left 30, front 60, above 10; 2m': each direction word
    with the lateral, front and elevation angle (degrees, to REASON_STEP_DEG) and the distance (to 0.5 m). Rounded
    so, two sources a relation question may ask about (angles >= 20 deg apart, distances >= 1 m) stay in order."""
    g, t = geometry(rir), rir['targets']
    angles = [round(abs(g[k]) / REASON_STEP_DEG) * REASON_STEP_DEG for k in ('lat', 'front', 'elev')]
    where = ', '.join(f'{w} {a}' for w, a in zip(t['direction'], angles))
    return f"the {clip['labels'][0].lower()}: {where}; {common.distance_words(t['distance'])}"


def reasoned(qtype, stated, answer):
    """OWL-style answer (arXiv 2509.26140): first what is heard, each sound of `stated` [(clip, rir), ...] in turn,
    then the conclusion. D's answer is the statements (its sound first); E's ends in 'So: <the plain answer>'."""
    heard_text = '. '.join(heard(c, r) for c, r in stated)
    return heard_text if qtype == 'MIXUP_SINGLE_DOA' else f'{heard_text}. So: {answer}'


class Maker:
    """Draws items for one split: its clips, IRs and phrasings, one numpy Generator (so one seed = one file)."""

    def __init__(self, clips, rirs, audio_root, phrasing, margins, seed, reasoning=False, word_noise=0.0):
        if not clips or not rirs:
            raise ValueError(f'{phrasing} split: {len(clips)} clips and {len(rirs)} IRs; both are needed')
        self.clips, self.rirs, self.audio_root, self.phrasing = clips, rirs, audio_root, phrasing
        self.reasoning = reasoning
        self.rng = np.random.default_rng(seed)
        # a generator of its own, so that word noise changes the question texts and nothing else of the file
        self.word_noise, self.noise_rng = word_noise, np.random.default_rng([seed, 1])
        self.pairs = relation_pairs(rirs, margins)

    def pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def clip_pair(self):
        a = self.pick(self.clips)
        for _ in range(1000):
            b = self.pick(self.clips)
            if not set(a['labels']) & set(b['labels']):
                return a, b
        raise RuntimeError(f"no clip without a label in common with {a['path']} {a['labels']}")

    def ir_pair(self, relations):
        usable = [r for r in relations if self.pairs.get(r)]
        if not usable:
            raise RuntimeError(f'no IR pair (same room and listener) satisfies any of {relations}; render more IRs '
                               f'per room or lower the margins')
        rel = self.pick(usable)
        i, j = self.pick(self.pairs[rel])
        return rel, self.rirs[i], self.rirs[j]

    def record(self, qtype, sources, question, answer, stated=None):
        """sources: [(clip, rir), ...], the one the question is about first; with reasoning, the D and E answers state
        the sounds in the order of `stated` (default: sources) before concluding."""
        (c1, r1), (c2, r2) = sources[0], (sources[1] if len(sources) > 1 else (None, None))
        if self.reasoning and common.TYPE_LETTER[qtype] in 'DE':
            answer = reasoned(qtype, stated or sources, answer)
        def rel(c):  # relative to audio_root (official style); absolute when the clip lives elsewhere
            if c is None:
                return None
            r = os.path.relpath(c['path'], self.audio_root)
            return c['path'] if r.startswith('..') else r
        return {'audio_id': rel(c1), 'reverb_id': r1['fname'], 'audio_id2': rel(c2),
                'reverb_id2': r2['fname'] if r2 else None, 'question_id': 0, 'question_type': qtype,
                'question': question, 'answer': answer,
                'targets': [{'labels': list(c['labels']), **r['targets']} for c, r in sources]}

    def question(self, qtype, **kw):
        template = self.pick(TEMPLATES[qtype][self.phrasing])
        return (self.noisy(template) if self.word_noise else template).format(**kw)

    def noisy(self, template):
        """The template with each plain word dropped (probability word_noise / 2) or swapped for a train word
        (likewise); placeholders such as '{x}' are kept, so the question still names what it asks about."""
        words = []
        for w in template.split(' '):
            u = self.noise_rng.random()
            if '{' in w or u >= self.word_noise:
                words.append(w)
            elif u >= self.word_noise / 2:
                words.append(TRAIN_WORDS[int(self.noise_rng.integers(len(TRAIN_WORDS)))])
        return ' '.join(words) or template

    def item(self, qtype, k):
        """The k-th item of a type (k decides Yes/No for binary types: even k -> Yes)."""
        if qtype in ('CLASSIFICATION', 'DOA'):
            c, r = self.pick(self.clips), self.pick(self.rirs)
            ans = '; '.join(c['labels']) if qtype == 'CLASSIFICATION' else doa_answer(r['targets'])
            return self.record(qtype, [(c, r)], self.question(qtype), ans)
        (ca, cb), name = self.clip_pair(), lambda c: c['labels'][0].lower()
        if qtype == 'MIXUP_SINGLE_CLASSIFICATION':
            rel, ra, rb = self.ir_pair(['side_' + w for w in DIRECTIONS])
            q = self.question(qtype, where=WHERE_PHRASE[rel[5:]])
            return self.record(qtype, [(ca, ra), (cb, rb)], q, '; '.join(ca['labels']))
        if qtype in ('MIXUP_SINGLE_DOA', 'MIXUP_NONBINARY_DISTANCE'):
            _, ra, rb = self.ir_pair(['any'])
            if qtype == 'MIXUP_SINGLE_DOA':
                ans = doa_answer(ra['targets'])
            else:
                ans = common.distance_words(float(np.linalg.norm(geometry(ra)['pos'] - geometry(rb)['pos'])))
            return self.record(qtype, [(ca, ra), (cb, rb)], self.question(qtype, x=name(ca), y=name(cb)), ans)
        if qtype in BINARY_TYPES:
            asked = list(DIRECTIONS) if qtype == 'MIXUP_DIRECTION' else ['closer', 'farther']
            yes = k % 2 == 0
            rel, ra, rb = self.ir_pair(asked if yes else [OPPOSITE[r] for r in asked])
            q = self.question(qtype, x=name(ca), y=name(cb), rel=REL_PHRASE[rel if yes else OPPOSITE[rel]])
            return self.record(qtype, [(ca, ra), (cb, rb)], q, 'Yes' if yes else 'No')
        if qtype == 'MIXUP_NONBINARY_DIRECTION':
            rel, ra, rb = self.ir_pair(list(DIRECTIONS))
            axis = rel if rel in CHOICE_PHRASE else OPPOSITE[rel]
            q = self.question(qtype, x=name(ca), y=name(cb), choice=CHOICE_PHRASE[axis])
            return self.record(qtype, [(ca, ra), (cb, rb)], q, rel)
        if qtype == 'MIXUP_NONBINARY_SOURCE':
            rel, ra, rb = self.ir_pair(list(OPPOSITE))
            x, y = (ca, cb) if self.rng.random() < 0.5 else (cb, ca)
            q = self.question(qtype, cmp=CMP_PHRASE[rel], x=name(x), y=name(y))
            stated = [(ca, ra), (cb, rb)] if x is ca else [(cb, rb), (ca, ra)]  # the question's order, not the answer's
            return self.record(qtype, [(ca, ra), (cb, rb)], q, '; '.join(ca['labels']), stated)
        raise ValueError(f'unknown question_type {qtype!r}; expected one of {QUESTION_TYPES}')

    def make(self, counts):
        items = []
        for qtype in QUESTION_TYPES:
            n = counts.get(qtype, 0)
            n += n % 2 if qtype in BINARY_TYPES else 0  # Yes/No exactly 50/50
            items += [self.item(qtype, k) for k in range(n)]
        order = self.rng.permutation(len(items))
        items = [items[i] for i in order]
        for qid, it in enumerate(items):
            it['question_id'] = qid
        return items


def summary(split, items):
    lines = [f'## {split}: {len(items)} items', '', '| question_type | items | answers (top 4) |', '|---|---|---|']
    for qtype in QUESTION_TYPES:
        answers = collections.Counter(it['answer'] for it in items if it['question_type'] == qtype)
        top = ', '.join(f'`{a}` {n}' for a, n in sorted(answers.items(), key=lambda kv: (-kv[1], kv[0]))[:4])
        lines.append(f'| {qtype} | {sum(answers.values())} | {top} |')
    octants = collections.Counter(', '.join(t['direction']) for it in items for t in it['targets'])
    dclass = collections.Counter(t['distance_class'] for it in items for t in it['targets'])
    lines += ['', 'sources per octant: ' + ', '.join(f'{k} {v}' for k, v in sorted(octants.items())),
              '', 'sources per distance class (0.5 m): ' + ', '.join(f'{k} {v}' for k, v in sorted(dclass.items())), '']
    return lines

# -----------------------------------------------------------------------------
# config
sources = 'out/sources/sources.jsonl'  # sources list (sources.py)
render_dir = 'out/rirs'  # render.py output: {train,eval}_reverberation.jsonl + binaural/
out_dir = 'out/qa'       # writes {train,eval}.jsonl, meta.json, summary.md
train_counts = {'CLASSIFICATION': 20000, 'DOA': 20000, 'MIXUP_SINGLE_CLASSIFICATION': 20000, 'MIXUP_SINGLE_DOA': 20000,
                'MIXUP_DIRECTION': 20000, 'MIXUP_DISTANCE_BOTH': 20000, 'MIXUP_NONBINARY_DIRECTION': 5000,
                'MIXUP_NONBINARY_DISTANCE': 5000, 'MIXUP_NONBINARY_SOURCE': 5000}  # items per question_type
eval_counts = {t: 1000 for t in QUESTION_TYPES}  # items per question_type
angle_margin_deg = 20.0   # relative direction questions: angle difference at least this (deg)
side_margin_deg = 10.0    # "the sound on your left": each source at least this far from the dividing plane (deg)
distance_margin_m = 1.0   # relative distance questions: distance difference at least this (m)
min_separation_m = 0.5    # two sources of one item at least this far apart (m)
reasoning = False         # D and E answers first state each sound's position, then conclude (OWL-style; paper: plain)
word_noise = 0.0          # train questions: share of template words dropped or swapped (0.0 = the templates as written)
seed = 1337
device = 'cpu'            # unused (no tensors here); accepted like every stage
# -----------------------------------------------------------------------------

if __name__ == '__main__':
    exec(open('configurator.py').read())
    from features import read_rirs, read_sources
    assert not reasoning or (angle_margin_deg > REASON_STEP_DEG and distance_margin_m > 0.5), \
        f'reasoning answers round angles to {REASON_STEP_DEG} deg and distances to 0.5 m: they need ' \
        f'angle_margin_deg > {REASON_STEP_DEG} and distance_margin_m > 0.5 to keep every relation decided'
    assert 0.0 <= word_noise < 1.0, f'word_noise is a probability below 1, got {word_noise}'
    unknown = (set(train_counts) | set(eval_counts)) - set(QUESTION_TYPES)
    assert not unknown, f'unknown question_type(s) in counts: {sorted(unknown)}; expected {QUESTION_TYPES}'
    margins = {'angle_margin_deg': angle_margin_deg, 'side_margin_deg': side_margin_deg,
               'distance_margin_m': distance_margin_m, 'min_separation_m': min_separation_m}
    t0 = time.time()
    clips = read_sources(sources)
    audio_root = os.path.dirname(os.path.abspath(sources))
    out, lines = {}, ['# SpatialSoundQA-style items', '', f'margins: {margins}; seed {seed}', '']
    for k, split in enumerate(('train', 'eval')):
        rirs = read_rirs(render_dir, split)
        maker = Maker([c for c in clips if c['split'] == split], rirs, audio_root, split, margins, seed + k, reasoning,
                      word_noise if split == 'train' else 0.0)
        out[split] = maker.make(train_counts if split == 'train' else eval_counts)
        common.write_jsonl(os.path.join(out_dir, f'{split}.jsonl'), out[split])
        lines += summary(split, out[split])
        print(f'{split}: {len(out[split])} items from {len(maker.clips)} clips, {len(rirs)} IRs')
    rooms = {s: {it['reverb_id'].split('/')[0] for it in out[s]} for s in out}
    if rooms['train'] & rooms['eval']:
        print(f"warning: {len(rooms['train'] & rooms['eval'])} room(s) appear in both train and eval IRs")
    # paths relative to out_dir (common.stored_path), so the QA folder can move together with its audio
    meta = {'audio_root': common.stored_path(audio_root, out_dir),
            'reverb_root': common.stored_path(os.path.join(render_dir, 'binaural'), out_dir),
            'classes': sorted({lab for c in clips for lab in c['labels']}), 'stages': STAGES,
            'counts': {s: dict(collections.Counter(it['question_type'] for it in out[s])) for s in out},
            'margins': margins, 'seed': seed, 'sources': common.stored_path(sources, out_dir), 'reasoning': reasoning,
            'word_noise': word_noise}
    common.write_json(os.path.join(out_dir, 'meta.json'), meta)
    lines += [f'{time.time() - t0:.1f} s']
    common.write_text(os.path.join(out_dir, 'summary.md'), '\n'.join(lines) + '\n')
    print(f'wrote {out_dir}/{{train,eval}}.jsonl, meta.json, summary.md in {time.time() - t0:.1f} s')
