"""
Ask a trained BAT a question about one binaural recording (or a dry clip placed in a room by an impulse response).

    python sample.py --wav=x.wav --question="Where is the sound coming from?"
    python sample.py --clip=dry.wav --rir=out/demo/rirs/binaural/<room>/0.npy --question="What sound is this?"
    python sample.py --ckpt=out/bat/ckpt.pt --wav=x.wav --question="..." --beams=4 --device=cuda
    python sample.py --ckpt=BAT/model.pt --encoder_ckpt=SpatialAST/finetuned.pth --llm=Llama-2-7b-hf \
        --clip=dry.wav --rir=mp3d_reverb/binaural/<scene>/<k>.npy --question="..."   (the released BAT)

The WAV must have two channels (left, right); it is level-normalised with one gain for both ears (RMS -14 dBFS, as
the dry sources of the training data; the gain is printed), another sample rate is resampled to 32 kHz, and the
recording is looped/cropped to the length the model was trained on (each with a note). Bad input (missing, not audio,
empty, shorter than 0.1 s, silent, NaN/inf, wrong channel count, an IR that is not a (2, L) float .npy) stops with one
sentence naming the file and a non-zero exit: no answer is given for audio the model cannot hear.
"""
import os

SAMPLE_RATE = 32000


def read_binaural(path, clip_seconds, sample_rate=SAMPLE_RATE, log=print):
    """A 2-channel audio file -> np.float32 (2, N) at sample_rate, level-normalised, looped/cropped to clip_seconds."""
    from features import BadClip, load_binaural
    try:
        return load_binaural(path, sample_rate, clip_seconds, log=lambda m: log(f"sample: {m}"))
    except BadClip as e:
        raise SystemExit(f"sample: {e}") from None


def place_clip(clip, rir, clip_seconds, device, pad='loop'):
    """A dry mono clip + a (2, L) IR -> (1, 2, N) binaural waveform, as the QA data are made (pad: 'loop' | 'zero')."""
    import torch
    from features import BadClip, read_audio, load_clip, load_rir, convolve_mix
    try:
        data, sr = read_audio(clip)
        if data.shape[1] != 1:
            raise BadClip(f"{clip}: {data.shape[1]} channels; --clip= expects a dry mono clip (a binaural recording "
                          f"goes in --wav= without --rir=)")
        ir = torch.from_numpy(load_rir(rir)).to(device)
        dry = torch.from_numpy(load_clip(clip, SAMPLE_RATE, clip_seconds, pad)).to(device)  # -14 dBFS, as the QA data
        if len(data) < clip_seconds * sr:
            print(f"sample: note: {clip} is {len(data) / sr:.2f} s; {'looped' if pad == 'loop' else 'zero-padded'} "
                  f"to the {clip_seconds:g} s the model was trained on")
    except BadClip as e:
        raise SystemExit(f"sample: {e}") from None
    return convolve_mix(dry[None, None], ir[None, None], torch.ones(1, dtype=torch.long, device=device))

# -----------------------------------------------------------------------------
# config
ckpt = 'out/demo/bat/ckpt.pt'  # train_bat.py checkpoint, or the released SLAM-LLM BAT model.pt
encoder_ckpt = ''              # '' = the one the checkpoint names (resolved beside a moved run); else ours or the
                               # official finetuned.pth (model.pt: required)
llm = ''                       # '' = the one the checkpoint names; else a LLaMA-2 HF dir (model.pt: required)
lora_alpha = 32.0              # model.pt only (it does not store alpha): the released recipe's 32
wav = ''                       # a binaural (2-channel) audio file
clip = ''                      # ... or a dry mono clip
rir = ''                       # ... with a (2, L) .npy impulse response
question = ''                  # the question to ask
max_new_tokens = 0             # 0 = 200 for a LLaMA-2 checkpoint (released), 32 for the scratch LLM
beams = 0                      # 1 = greedy | 4 = beam search (released recipe) | 0 = 4 for LLaMA-2, 1 for scratch
out_dir = ''                   # '' = print only; else also write <out_dir>/answer.json
device = 'auto'                # 'auto' | 'cpu' | 'cuda'
seed = 1337
# -----------------------------------------------------------------------------

if __name__ == '__main__':
    exec(open('configurator.py').read())
    import torch
    from bat import load_bat, encode_waveforms, format_prompt
    from common import write_json
    if not question:
        raise SystemExit('sample: give --question="..."')
    if bool(wav) == bool(clip) or bool(clip) != bool(rir):
        raise SystemExit('sample: give either --wav=binaural.wav, or --clip=dry.wav together with --rir=ir.npy')
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    torch.manual_seed(seed)
    model, encoder, tok, ck = load_bat(ckpt, device, encoder_ckpt, llm, lora_alpha)
    pretrained = ck['base']['llm'] != 'scratch'
    beams, max_new_tokens = beams or (4 if pretrained else 1), max_new_tokens or (200 if pretrained else 32)
    clip_seconds = ck['config']['clip_seconds']
    if wav:
        x = torch.from_numpy(read_binaural(wav, clip_seconds))[None].to(device)  # (1, 2, N)
    else:
        x = place_clip(clip, rir, clip_seconds, device, ck['config'].get('clip_pad', 'loop'))
    audio = encode_waveforms(encoder, x).float()
    ids = model.answer(audio, [tok.encode(format_prompt(question), bos=True, eos=False)], tok.pad_id, tok.eos_id,
                       max_new_tokens, beams)[0]
    answer = tok.decode(ids).strip()
    print(f"question: {question}\nanswer: {answer}")
    if out_dir:
        write_json(os.path.join(out_dir, 'answer.json'), {'question': question, 'answer': answer,
                                                          'input': wav or [clip, rir], 'ckpt': os.path.abspath(ckpt)})
