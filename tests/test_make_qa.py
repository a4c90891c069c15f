"""make_qa.py: answers match the geometry, balance, pairing rules, eval-only clips/rooms/phrasings, determinism."""
import collections
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import common  # noqa: E402
import make_qa  # noqa: E402

COUNTS = {t: 40 for t in make_qa.QUESTION_TYPES}
MARGINS = dict(angle=20.0, side=10.0, dist=1.0, sep=0.5)


def fake_render(root, rng):
    """Two rooms per split, one listener each, 24 sources around it (tiny IR files; make_qa reads no audio)."""
    for split in ('train', 'eval'):
        recs = []
        for room in range(2):
            room_id = f'{split}_{room:03d}'
            os.makedirs(root / 'binaural' / room_id, exist_ok=True)
            lis = np.array([3.0, 1.5, 3.0]) + rng.uniform(-0.5, 0.5, 3)
            for k in range(24):
                src = lis + rng.uniform([-2.8, -1.2, -2.8], [2.8, 1.2, 2.8])
                np.save(root / 'binaural' / room_id / f'{k}.npy', np.zeros((2, 8), np.float32))
                recs.append({'fname': f'{room_id}/{k}.npy', 'sensor_position': common.format_xyz(lis),
                             'source_position': common.format_xyz(src), 'agent_position': common.format_xyz(lis),
                             'room_dims': [6, 3, 6], 'absorption': 0.3, 'rt60': 0.4})
        common.write_jsonl(str(root / f'{split}_reverberation.jsonl'), recs)


def fake_sources(root):
    # 12 single-label classes plus a two-label clip sharing 'Bell' (so the no-shared-label rule matters)
    rows = []
    for c in range(12):
        for i in range(4):
            rows.append({'path': f'c{c}/{i}.flac', 'labels': [f'Class {c}'], 'split': 'eval' if i == 3 else 'train'})
    rows += [{'path': 'multi/0.flac', 'labels': ['Bell', 'Class 0'], 'split': 'train'},
             {'path': 'multi/1.flac', 'labels': ['Bell', 'Class 1'], 'split': 'eval'}]
    common.write_jsonl(str(root / 'sources.jsonl'), rows)


def run_make_qa(tmp, out, seed=1337, extra=''):
    cfg = tmp / f'cfg_{out}.py'
    cfg.write_text(f'sources = {str(tmp / "src" / "sources.jsonl")!r}\nrender_dir = {str(tmp / "rirs")!r}\n'
                   f'out_dir = {str(tmp / out)!r}\ntrain_counts = {COUNTS!r}\neval_counts = {COUNTS!r}\n'
                   f'seed = {seed}\n{extra}')
    r = subprocess.run([sys.executable, 'make_qa.py', str(cfg)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return tmp / out


@pytest.fixture(scope='module')
def qa(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('qa')
    (tmp / 'src').mkdir()
    fake_render(tmp / 'rirs', np.random.default_rng(0))
    fake_sources(tmp / 'src')
    out = run_make_qa(tmp, 'qa')
    data = {s: common.read_records(str(out / f'{s}.jsonl')) for s in ('train', 'eval')}
    irs = {r['fname']: r for s in ('train', 'eval') for r in common.read_records(str(tmp / 'rirs' / f'{s}_reverberation.jsonl'))}
    clips = {r['path']: r for r in common.read_records(str(tmp / 'src' / 'sources.jsonl'))}
    return tmp, out, data, irs, clips


def template_regex(tpl):
    rx = re.escape(tpl)
    phrases = {'where': make_qa.WHERE_PHRASE, 'rel': make_qa.REL_PHRASE, 'choice': make_qa.CHOICE_PHRASE,
               'cmp': make_qa.CMP_PHRASE}
    for key in ('x', 'y', 'where', 'rel', 'choice', 'cmp'):
        alt = '|'.join(re.escape(v) for v in phrases[key].values()) if key in phrases else '.+?'
        rx = rx.replace(re.escape('{' + key + '}'), f'(?P<{key}>{alt})')
    return re.compile('^' + rx + '$')


NAMES = {f'class {c}' for c in range(12)} | {'bell'}


def parse(record, phrasing):
    """The placeholders of the first template of this phrasing set that yields the question (names must be real)."""
    for tpl in make_qa.TEMPLATES[record['question_type']][phrasing]:
        m = template_regex(tpl).match(record['question'])
        if m and all(m.groupdict().get(k) in NAMES for k in ('x', 'y') if '{' + k + '}' in tpl):
            return m.groupdict()
    return None


def geo(ir):
    dx, dy, dz = common.offset(ir['sensor_position'], ir['source_position'])
    d = math.sqrt(dx * dx + dy * dy + dz * dz)
    return {'left': -math.degrees(math.asin(dx / d)), 'right': math.degrees(math.asin(dx / d)),
            'front': math.degrees(math.asin(-dz / d)), 'behind': -math.degrees(math.asin(-dz / d)),
            'above': math.degrees(math.atan2(dy, math.hypot(dx, dz))),
            'below': -math.degrees(math.atan2(dy, math.hypot(dx, dz))), 'closer': -d, 'farther': d,
            'pos': np.array(common.parse_xyz(ir['source_position']))}


def holds(rel, a, b):
    """a is clearly <rel> b (our own statement of the margins)."""
    margin = MARGINS['dist'] if rel in ('closer', 'farther') else MARGINS['angle']
    return a[rel] - b[rel] >= margin - 1e-9


def doa(ir):
    t = common.targets_of(ir['sensor_position'], ir['source_position'])
    return f"{', '.join(t['direction'])}; {common.distance_words(t['distance'])}"


def invert(table):
    return {v: k for k, v in table.items()}


def test_answers_match_geometry_for_every_type(qa):
    _, _, data, irs, clips = qa
    seen = collections.Counter()
    for split, items in data.items():
        for r in items:
            qt, ans = r['question_type'], r['answer']
            seen[qt] += 1
            p = parse(r, split)
            assert p is not None, f'question not from the {split} phrasings: {r["question"]}'
            ia, ca = irs[r['reverb_id']], clips[r['audio_id']]
            assert r['targets'][0] == {'labels': ca['labels'], **common.targets_of(ia['sensor_position'], ia['source_position'])}
            if qt == 'CLASSIFICATION':
                assert ans == '; '.join(ca['labels']) and r['audio_id2'] is None and r['reverb_id2'] is None
                continue
            if qt == 'DOA':
                assert ans == doa(ia) and r['audio_id2'] is None
                continue
            ib, cb = irs[r['reverb_id2']], clips[r['audio_id2']]
            ga, gb = geo(ia), geo(ib)
            assert r['targets'][1]['labels'] == cb['labels']
            if qt == 'MIXUP_SINGLE_CLASSIFICATION':
                side = invert(make_qa.WHERE_PHRASE)[p['where']]
                assert ga[side] >= MARGINS['side'] - 1e-9 and -gb[side] >= MARGINS['side'] - 1e-9
                assert ans == '; '.join(ca['labels'])
            elif qt == 'MIXUP_SINGLE_DOA':
                assert ans == doa(ia) and p['x'] == ca['labels'][0].lower()
            elif qt in make_qa.BINARY_TYPES:
                rel = invert(make_qa.REL_PHRASE)[p['rel']]
                assert (p['x'], p['y']) == (ca['labels'][0].lower(), cb['labels'][0].lower())
                assert holds(rel, ga, gb) if ans == 'Yes' else (ans == 'No' and holds(make_qa.OPPOSITE[rel], ga, gb))
            elif qt == 'MIXUP_NONBINARY_DIRECTION':
                assert ans in make_qa.DIRECTIONS and holds(ans, ga, gb)
                assert p['choice'] == make_qa.CHOICE_PHRASE.get(ans) or \
                    p['choice'] == make_qa.CHOICE_PHRASE[make_qa.OPPOSITE[ans]]
            elif qt == 'MIXUP_NONBINARY_DISTANCE':
                assert ans == common.distance_words(float(np.linalg.norm(ga['pos'] - gb['pos'])))
            elif qt == 'MIXUP_NONBINARY_SOURCE':
                rel = invert(make_qa.CMP_PHRASE)[p['cmp']]
                assert holds(rel, ga, gb) and ans == '; '.join(ca['labels'])
    assert set(seen) == set(make_qa.QUESTION_TYPES)


def test_binary_balanced_and_counts(qa):
    _, out, data, _, _ = qa
    for items in data.values():
        c = collections.Counter(r['question_type'] for r in items)
        assert all(c[t] == COUNTS[t] for t in make_qa.QUESTION_TYPES)
        for t in make_qa.BINARY_TYPES:
            yn = collections.Counter(r['answer'] for r in items if r['question_type'] == t)
            assert yn == {'Yes': COUNTS[t] // 2, 'No': COUNTS[t] // 2}
        assert sorted(r['question_id'] for r in items) == list(range(len(items)))
    meta = json.loads((out / 'meta.json').read_text())
    assert meta['stages']['1'] == ['CLASSIFICATION', 'DOA'] and len(meta['stages']['3']) == 9
    assert meta['stages']['2'] == common.stage_types(2)
    assert not os.path.isabs(meta['reverb_root']) and not os.path.isabs(meta['audio_root'])  # the folder can move
    assert os.path.isdir(out / meta['reverb_root']) and os.path.isdir(out / meta['audio_root'])
    assert 'Bell' in meta['classes'] and (out / 'summary.md').read_text().count('MIXUP_DIRECTION') >= 2


def test_pairs_same_room_listener_different_irs_and_classes(qa):
    _, _, data, irs, clips = qa
    for items in data.values():
        for r in items:
            if r['audio_id2'] is None:
                continue
            a, b = irs[r['reverb_id']], irs[r['reverb_id2']]
            assert r['reverb_id'] != r['reverb_id2'] and r['reverb_id'].split('/')[0] == r['reverb_id2'].split('/')[0]
            assert common.parse_xyz(a['sensor_position']) == common.parse_xyz(b['sensor_position'])
            assert not set(clips[r['audio_id']]['labels']) & set(clips[r['audio_id2']]['labels'])
            pa, pb = np.array(common.parse_xyz(a['source_position'])), np.array(common.parse_xyz(b['source_position']))
            assert np.linalg.norm(pa - pb) >= MARGINS['sep']


def test_eval_uses_only_eval_clips_rooms_phrasings(qa):
    _, _, data, _, clips = qa
    for split, items in data.items():
        for r in items:
            for a in (r['audio_id'], r['audio_id2']):
                assert a is None or clips[a]['split'] == split
            for h in (r['reverb_id'], r['reverb_id2']):
                assert h is None or h.startswith(split + '_')
            other = 'train' if split == 'eval' else 'eval'
            assert parse(r, split) is not None and parse(r, other) is None, r['question']


def test_same_seed_identical_files(qa):
    tmp, out, _, _, _ = qa
    again = run_make_qa(tmp, 'qa_again')
    other = run_make_qa(tmp, 'qa_other', seed=7)
    for s in ('train.jsonl', 'eval.jsonl'):
        assert (out / s).read_bytes() == (again / s).read_bytes()
        assert (out / s).read_bytes() != (other / s).read_bytes()


def test_word_noise_changes_train_questions_only(qa):
    """word_noise=0.4: the same items (clips, IRs, answers, targets) as the plain file, eval questions untouched;
    every train question is its template with words dropped or swapped for train words, the names it asks about
    kept; deterministic by seed."""
    tmp, _, data, _, _ = qa
    out = run_make_qa(tmp, 'qa_noise', extra='word_noise = 0.4\n')
    again = run_make_qa(tmp, 'qa_noise_again', extra='word_noise = 0.4\n')
    assert (out / 'train.jsonl').read_bytes() == (again / 'train.jsonl').read_bytes()
    assert json.loads((out / 'meta.json').read_text())['word_noise'] == 0.4
    noisy = {s: common.read_records(str(out / f'{s}.jsonl')) for s in ('train', 'eval')}
    assert noisy['eval'] == data['eval']
    changed = 0
    for plain, r in zip(data['train'], noisy['train']):
        assert {k: v for k, v in r.items() if k != 'question'} == {k: v for k, v in plain.items() if k != 'question'}
        changed += r['question'] != plain['question']
        fields = parse(plain, 'train')
        filled = {k: v for k, v in fields.items() if v is not None}
        words = r['question'].split(' ')
        for name in {filled[k] for k in ('x', 'y') if k in filled}:  # the sounds asked about are still named
            assert name in r['question'], (plain['question'], r['question'])
        assert all(w in plain['question'].split(' ') or w in make_qa.TRAIN_WORDS or any(w in v for v in filled.values())
                   for w in words), (plain['question'], r['question'])
    assert 0.5 * len(data['train']) < changed < len(data['train'])


def signed(statement):
    """A parsed statement -> {relation: value} as geo() gives them, from the stated words and angles."""
    _, words, angles, dist = statement
    lat, front, elev = (a if w in ('right', 'front', 'above') else -a for w, a in zip(words, angles))
    return {'right': lat, 'left': -lat, 'front': front, 'behind': -front, 'above': elev, 'below': -elev,
            'closer': -dist, 'farther': dist}


def test_reasoning_answers_parse_back_and_decide(qa):
    """reasoning=True: the same items (same seed), D and E answers state each sound, then conclude; eval.py reads
    back exactly the plain answer, and the stated positions alone decide every relation asked."""
    import eval as ev
    tmp, _, data, irs, clips = qa
    out = run_make_qa(tmp, 'qa_reason', extra='reasoning = True\n')
    assert json.loads((out / 'meta.json').read_text())['reasoning'] is True
    orders, seen = collections.Counter(), collections.Counter()
    for split in ('train', 'eval'):
        for plain, r in zip(data[split], common.read_records(str(out / f'{split}.jsonl'))):
            qt, ans = r['question_type'], r['answer']
            assert {k: v for k, v in r.items() if k != 'answer'} == {k: v for k, v in plain.items() if k != 'answer'}
            if common.TYPE_LETTER[qt] not in 'DE':
                assert ans == plain['answer']
                continue
            seen[qt] += 1
            said = ev.stated_positions(ans)
            sounds = [(clips[r['audio_id']], irs[r['reverb_id']]), (clips[r['audio_id2']], irs[r['reverb_id2']])]
            assert len(said) == 2 and ans.count('. the ') == 1
            names = [c['labels'][0].lower() for c, _ in sounds]
            if qt == 'MIXUP_NONBINARY_SOURCE':  # stated in the question's order, so not always the answer first
                assert sorted(s[0] for s in said) == sorted(names)
                orders[said[0][0] == names[0]] += 1
                sounds = sounds if said[0][0] == names[0] else sounds[::-1]
            else:
                assert [s[0] for s in said] == names
            for (name, words, angles, dist), (c, ir) in zip(said, sounds):
                t, g = common.targets_of(ir['sensor_position'], ir['source_position']), geo(ir)
                assert list(words) == t['direction'] and ev.parse_distance(common.distance_words(t['distance'])) == dist
                assert all(abs(a - abs(g[k])) <= make_qa.REASON_STEP_DEG / 2 + 1e-9 and a % make_qa.REASON_STEP_DEG == 0
                           for a, k in zip(angles, ('right', 'front', 'above')))
            a, b = signed(said[0]), signed(said[1])
            if qt == 'MIXUP_SINGLE_DOA':
                part = ev.doa_part(ans)
                assert (ev.parse_direction(part), ev.parse_distance(part)) == \
                    (ev.parse_direction(plain['answer']), ev.parse_distance(plain['answer']))
                assert 'So:' not in ans
                continue
            assert ans.endswith('. So: ' + plain['answer']) and ev.conclusion(ans) == plain['answer']
            p = parse(r, split)
            if qt in make_qa.BINARY_TYPES:
                rel = invert(make_qa.REL_PHRASE)[p['rel']]
                assert (a[rel] > b[rel]) == (plain['answer'] == 'Yes') and a[rel] != b[rel]
            elif qt == 'MIXUP_NONBINARY_DIRECTION':
                assert a[plain['answer']] > b[plain['answer']]
            elif qt == 'MIXUP_NONBINARY_SOURCE':
                rel = invert(make_qa.CMP_PHRASE)[p['cmp']]
                winner = said[0] if said[0][0] == names[0] else said[1]
                loser = said[1] if winner is said[0] else said[0]
                assert signed(winner)[rel] > signed(loser)[rel]
    assert set(seen) == {t for t in make_qa.QUESTION_TYPES if common.TYPE_LETTER[t] in 'DE'}
    assert orders[True] and orders[False]


def test_official_records_load(tmp_path):
    """A record in the official SpatialSoundQA layout ({"data": [...]}, audio_id without extension) loads and mixes."""
    import soundfile as sf
    import features
    (tmp_path / 'AudioSet' / 'eval' / 'audio').mkdir(parents=True)
    (tmp_path / 'mp3d_reverb' / 'binaural' / 'q9vSo1VnCiC').mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ('YI-HlrcP6Qg4', 'Yabcdefghij'):
        sf.write(str(tmp_path / 'AudioSet' / 'eval' / 'audio' / f'{name}.wav'), 0.1 * rng.standard_normal(16000), 16000)
    for k in (31, 32):
        np.save(tmp_path / 'mp3d_reverb' / 'binaural' / 'q9vSo1VnCiC' / f'{k}.npy', rng.standard_normal((2, 50)).astype(np.float32))
    rec = {'audio_id': 'eval/audio/YI-HlrcP6Qg4', 'reverb_id': 'q9vSo1VnCiC/32.npy', 'audio_id2': 'eval/audio/Yabcdefghij',
           'reverb_id2': 'q9vSo1VnCiC/31.npy', 'question_id': 5, 'question_type': 'MIXUP_DIRECTION',
           'question': 'Is the sound of the dog to the left of the sound of the banjo?', 'answer': 'Yes'}
    (tmp_path / 'eval-stage3-direction.json').write_text(json.dumps({'data': [rec, {**rec, 'audio_id2': None, 'reverb_id2': None}]}, indent=1))
    recs = common.read_records(str(tmp_path / 'eval-stage3-direction.json'))
    assert recs[0] == rec and len(recs) == 2
    wav = features.qa_waveforms(recs, str(tmp_path / 'AudioSet'), str(tmp_path / 'mp3d_reverb' / 'binaural'),
                                features.AudioCache(), 'cpu', clip_seconds=0.5)
    assert wav.shape == (2, 2, 16000) and bool(wav.abs().sum() > 0)


# -----------------------------------------------------------------------------
# the meaning of every phrasing, read as English and checked against the sources' `targets` with geometry written
# here (nothing from make_qa's phrase tables: a swapped phrase or a template that puts X and Y the wrong way round
# gives a wrong answer here)

def unit(t):
    """(right, front, up) unit vector of a target: azimuth 0 = right, 90 = front, elevation positive up."""
    az, el = math.radians(t['azimuth']), math.radians(t['elevation'])
    return math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)


def xyz(t):
    return np.array(unit(t)) * t['distance']


# "X is <phrase> Y" as a comparison of one number of X and Y: (what, sign) means sign * (what(X) - what(Y)) > 0
LATERAL, FRONTAL, UP = (lambda t: unit(t)[0]), (lambda t: unit(t)[1]), (lambda t: t['elevation'])
FAR = lambda t: t['distance']
RELATION = {'to the left of': (LATERAL, -1), 'to the right of': (LATERAL, 1), 'in front of': (FRONTAL, 1),
            'behind': (FRONTAL, -1), 'above': (UP, 1), 'below': (UP, -1), 'closer to you than': (FAR, -1),
            'farther from you than': (FAR, 1)}
CHOICE = {'to the left or to the right of': (LATERAL, 'right', 'left'), 'in front of or behind': (FRONTAL, 'front', 'behind'),
          'above or below': (UP, 'above', 'below')}  # (what, word if X's is larger, word if smaller)
EXTREME = {'more to the left': (LATERAL, -1), 'more to the right': (LATERAL, 1), 'more to the front': (FRONTAL, 1),
           'more to the back': (FRONTAL, -1), 'higher': (UP, 1), 'lower': (UP, -1), 'closer to you': (FAR, -1),
           'farther from you': (FAR, 1)}
SIDE = {'on your left': (LATERAL, -1), 'on your right': (LATERAL, 1), 'in front of you': (FRONTAL, 1),
        'behind you': (FRONTAL, -1), 'above you': (UP, 1), 'below you': (UP, -1)}


def find_phrase(question, table):
    """The (longest) phrase of table in the question and where it starts."""
    hits = [(m.start(), p) for p in table for m in re.finditer(r'\b' + re.escape(p) + r'\b', question)]
    assert hits, f'no phrase of {sorted(table)} in {question!r}'
    start = max(hits, key=lambda h: len(h[1]))[0]
    return max((p for s, p in hits if s == start), key=len), start


def subject_and_object(question, targets, at):
    """English: the subject is the sound named last before the relation phrase ("Is the X left of the Y?",
    "Compared with the Y, is the X left of it?")."""
    def last_before(t):
        spots = [m.start() for m in re.finditer(r'\bthe ' + re.escape(t['labels'][0].lower()) + r'\b', question.lower())]
        before = [s for s in spots if s < at]
        return max(before) if before else -1
    a, b = targets
    assert last_before(a) >= 0 or last_before(b) >= 0, question
    return (a, b) if last_before(a) > last_before(b) else (b, a)


def direction_words_of(t, tol_deg=1.0):
    """The three words of a DoA answer, each as a set (both words within tol_deg of a dividing plane: the targets'
    angles are rounded to whole degrees)."""
    r, f, _ = unit(t)
    tol = math.sin(math.radians(tol_deg))
    pick = lambda v, pos, neg: {pos} if v > tol else {neg} if v < -tol else {pos, neg}
    return pick(r, 'right', 'left'), pick(f, 'front', 'behind'), pick(t['elevation'] / tol_deg * tol, 'above', 'below')


def distance_text_ok(text, metres, slack=0.0):
    m = re.fullmatch(r'(\d+(?:\.5)?)m', text)
    return m is not None and abs(float(m.group(1)) - metres) <= 0.25 + slack + 1e-9


def check_meaning(r):
    q, ans, ts = r['question'], r['answer'], r['targets']
    qt, labels = r['question_type'], ['; '.join(t['labels']) for t in ts]
    if qt == 'CLASSIFICATION':
        assert len(ts) == 1 and ans == labels[0]
    elif qt in ('DOA', 'MIXUP_SINGLE_DOA'):
        t = ts[0]
        if qt == 'MIXUP_SINGLE_DOA':  # the source the question names
            t = [t for t in ts if re.search(r'\bthe ' + re.escape(t['labels'][0].lower()) + r'\b', q.lower())]
            assert len(t) == 1, q
            t = t[0]
        words, dist = ans.split('; ')
        assert all(w in allowed for w, allowed in zip(words.split(', '), direction_words_of(t))), (q, ans, t)
        assert distance_text_ok(dist, t['distance']), (ans, t)
    elif qt == 'MIXUP_SINGLE_CLASSIFICATION':
        what, sign = SIDE[find_phrase(q, SIDE)[0]]
        there = [lab for t, lab in zip(ts, labels) if sign * what(t) > 0]
        assert there == [ans], (q, ans, ts)
    elif qt in ('MIXUP_DIRECTION', 'MIXUP_DISTANCE_BOTH'):
        phrase, at = find_phrase(q, RELATION)
        x, y = subject_and_object(q, ts, at)
        what, sign = RELATION[phrase]
        assert ans == ('Yes' if sign * (what(x) - what(y)) > 0 else 'No'), (q, ans, x, y)
    elif qt == 'MIXUP_NONBINARY_DIRECTION':
        phrase, at = find_phrase(q, CHOICE)
        x, y = subject_and_object(q, ts, at)
        what, larger, smaller = CHOICE[phrase]
        assert ans == (larger if what(x) > what(y) else smaller), (q, ans, x, y)
    elif qt == 'MIXUP_NONBINARY_DISTANCE':
        slack = 0.02 * (ts[0]['distance'] + ts[1]['distance'])  # the targets' angles are rounded to 1 degree
        assert distance_text_ok(ans, float(np.linalg.norm(xyz(ts[0]) - xyz(ts[1]))), slack), (q, ans, ts)
    elif qt == 'MIXUP_NONBINARY_SOURCE':
        what, sign = EXTREME[find_phrase(q, EXTREME)[0]]
        best = max(zip(ts, labels), key=lambda tl: sign * what(tl[0]))[1]
        assert ans == best, (q, ans, ts)
    else:
        raise AssertionError(f'unknown question_type {qt}')


def template_of(question, phrasings):
    """Which template a question was made from: placeholders as wildcards (no phrase table needed); of several that
    match, the one with the most fixed text ('What is the sound {where}?' also matches 'What is the sound event
    heard on your left?')."""
    hits = []
    for tpl in phrasings:
        rx = re.escape(tpl)
        for key in ('x', 'y', 'where', 'rel', 'choice', 'cmp'):
            rx = rx.replace(re.escape('{' + key + '}'), '.+?')
        if re.fullmatch(rx, question):
            hits.append(tpl)
    return max(hits, key=lambda t: len(re.sub(r'\{\w+\}', '', t)), default=None)


def test_every_phrasing_means_what_the_answer_says(qa):
    """Many items of every type (in-process), every train and eval phrasing used, each answer recomputed."""
    import features
    tmp = qa[0]
    clips = features.read_sources(str(tmp / 'src' / 'sources.jsonl'))
    margins = {'angle_margin_deg': MARGINS['angle'], 'side_margin_deg': MARGINS['side'],
               'distance_margin_m': MARGINS['dist'], 'min_separation_m': MARGINS['sep']}
    for k, (split, n) in enumerate((('train', 240), ('eval', 60))):
        rirs = features.read_rirs(str(tmp / 'rirs'), split)
        maker = make_qa.Maker([c for c in clips if c['split'] == split], rirs, str(tmp / 'src'), split, margins, 5 + k)
        items = maker.make({t: n for t in make_qa.QUESTION_TYPES})
        used = collections.defaultdict(set)
        for r in items:
            check_meaning(r)
            used[r['question_type']].add(template_of(r['question'], make_qa.TEMPLATES[r['question_type']][split]))
        for qt, phrasings in make_qa.TEMPLATES.items():
            assert used[qt] == set(phrasings[split]), (split, qt, set(phrasings[split]) - used[qt])
