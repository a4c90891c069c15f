"""
Speed of llama.py against transformers' LlamaForCausalLM, measured in the same run on the same checkpoint.

CPU (default): a random 134M-parameter LLaMA (dim 768, 12 layers, 12 heads, ffn 2048, vocab 32000) written by
transformers with save_pretrained, loaded into both; prints prefill tokens/s, decode tokens/s at batch 1 and 8, and
the ratios.
    python bench/bench_llama.py --threads=1                            # ~1 min; steadiest on a shared machine
    python bench/bench_llama.py                                        # torch's default threads
    python bench/bench_llama.py --dim=1024 --heads=16 --kv_heads=16 --ffn=2816   # 220M
GPU: a 7B-shaped model with random bf16 weights, batch-1 decode against the memory-bandwidth bound
(weight bytes / measured device copy bandwidth); --hf adds transformers on the same weights for a ratio.
    python bench/bench_llama.py --gpu [--hf]

Decode rate = B * (N - 1) / (time(generate N tokens) - time(generate 1 token)): the prompt's prefill cancels out.
Timings are the minimum over --repeats (5) runs after one warm-up, the two implementations taking turns. On a shared
CPU, wall-clock ratios swing with the other load; the last column is the ratio of process CPU times (all threads).
"""
import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere
import llama  # noqa: E402


def timed(fns, repeats, sync):
    """Best wall-clock and best process CPU time of each function. The functions take turns, so a busy shared machine
    slows them alike; CPU time (all threads) counts the work done even while other processes hold the cores."""
    for fn in fns:
        fn()  # warm-up (allocator, kernels, thread pools)
    best = {'wall': [float('inf')] * len(fns), 'cpu': [float('inf')] * len(fns)}
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            sync()
            best['wall'][i] = min(best['wall'][i], time.perf_counter() - t0)
            best['cpu'][i] = min(best['cpu'][i], time.process_time() - c0)
    return best


def hf_generate(hf, x, n):
    return hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                       pad_token_id=0)


def ours_generate(m, x, n):
    return m.generate(x, max_new_tokens=n)


def ours_generate_graph(m, x, n):
    return m.generate(x, max_new_tokens=n, cuda_graph=True)


def decode_rates(pairs, x, n, repeats, sync):
    """tokens/s of the decode loop alone, per (generate, model): generating n tokens minus generating 1."""
    fns = [(lambda g=g, m=m, k=k: g(m, x, k)) for g, m in pairs for k in (n, 1)]
    t = timed(fns, repeats, sync)
    return {clock: [x.shape[0] * (n - 1) / max(t[clock][2 * i] - t[clock][2 * i + 1], 1e-9) for i in range(len(pairs))]
            for clock in t}


def bench_cpu(a):
    import transformers
    torch.manual_seed(a.seed)
    cfg = transformers.LlamaConfig(hidden_size=a.dim, intermediate_size=a.ffn, num_hidden_layers=a.layers,
                                   num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, vocab_size=32000,
                                   max_position_embeddings=4096, tie_word_embeddings=False, eos_token_id=None,
                                   bos_token_id=1, pad_token_id=0)
    nosync = lambda: None
    with tempfile.TemporaryDirectory() as d:
        transformers.LlamaForCausalLM(cfg).save_pretrained(d)
        hf = transformers.LlamaForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation='sdpa').eval()
        ours = llama.load(d)
    hf.generation_config.eos_token_id = None
    n_params = ours.num_params()
    print(f'model: dim {a.dim}, {a.layers} layers, {a.heads} heads ({a.kv_heads} kv), ffn {a.ffn}, vocab 32000, '
          f'{n_params / 1e6:.0f}M params fp32; torch {torch.__version__}, transformers {transformers.__version__}, '
          f'{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}')
    g = torch.Generator().manual_seed(a.seed)
    rows = []
    with torch.inference_mode():
        x = torch.randint(3, 32000, (1, a.prefill), generator=g)
        t = timed([lambda: ours(x), lambda: hf(x)], a.repeats, nosync)
        rows.append((f'prefill tokens/s (B=1, T={a.prefill})', {k: [a.prefill / v for v in t[k]] for k in t}))
        for b in (1, 8):
            x = torch.randint(3, 32000, (b, a.prompt), generator=g)
            if not torch.equal(ours.generate(x, max_new_tokens=8), hf_generate(hf, x, 8)):
                print(f'note: greedy outputs differ at B={b} (near ties?); tests/test_llama.py checks parity')
            r = decode_rates([(ours_generate, ours), (hf_generate, hf)], x, a.new, a.repeats, nosync)
            rows.append((f'decode tokens/s (B={b}, prompt {a.prompt}, {a.new} new)', r))
    print(f'{"wall clock (CPU-time ratio in the last column)":44s} {"llama.py":>10s} {"transformers":>13s} '
          f'{"ratio":>7s} {"cpu-ratio":>9s}')
    for name, r in rows:
        (w_ours, w_hf), (c_ours, c_hf) = r['wall'], r['cpu']
        print(f'{name:44s} {w_ours:10.1f} {w_hf:13.1f} {w_ours / w_hf:7.2f} {c_ours / c_hf:9.2f}')
    print(f'load average at the end {os.getloadavg()[0]:.1f}')


def copy_bandwidth(device, n_bytes=2 << 30, repeats=10):
    """Bytes moved per second by a device-to-device copy (read + write), the best a weight-streaming decode can do."""
    src = torch.empty(n_bytes // 2, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    t, = timed([lambda: dst.copy_(src)], repeats, torch.cuda.synchronize)['wall']
    return 2 * n_bytes / t


def bench_gpu(a):
    assert torch.cuda.is_available(), '--gpu needs CUDA'
    dev = 'cuda'
    torch.manual_seed(a.seed)
    args = llama.ModelArgs()  # LLaMA-2-7B shape
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(dev):
        ours = llama.Transformer(args).eval()  # random weights, made on the GPU in bf16
    torch.set_default_dtype(torch.float32)
    weight_bytes = sum(p.numel() * p.element_size() for p in ours.parameters())
    bw = copy_bandwidth(dev)
    # a decode step reads every weight once, except the embedding table (one row per token)
    step_bytes = weight_bytes - ours.tok_embeddings.weight.numel() * 2
    bound = step_bytes / bw
    x = torch.randint(3, 32000, (1, a.prompt), device=dev)
    sync = torch.cuda.synchronize
    same = (ours_generate(ours, x, 16) == ours_generate_graph(ours, x, 16))[0, a.prompt:].sum().item()
    print(f'greedy tokens equal, eager vs cuda_graph: {same}/16 (bf16 kernels differ; random weights give near ties)')
    r_eager, r_ours = decode_rates([(ours_generate, ours), (ours_generate_graph, ours)], x, a.new, a.repeats,
                                   sync)['wall']
    print(f'{torch.cuda.get_device_name()}: 7B-shaped bf16, {weight_bytes / 1e9:.2f} GB of weights, '
          f'copy bandwidth {bw / 1e9:.0f} GB/s -> bound {1e3 * bound:.2f} ms/token ({1 / bound:.1f} tokens/s)')
    for name, r in (('eager', r_eager), ('cuda_graph=True', r_ours)):
        print(f'llama.py batch-1 decode, {name}: {1e3 / r:.2f} ms/token ({r:.1f} tokens/s) = '
              f'{100 * r * bound:.0f}% of the bandwidth bound')
    if a.hf:
        import transformers
        cfg = transformers.LlamaConfig(eos_token_id=None, pad_token_id=0)  # defaults are LLaMA-2-7B
        del ours
        torch.cuda.empty_cache()
        torch.set_default_dtype(torch.bfloat16)
        with torch.device(dev):
            hf = transformers.LlamaForCausalLM(cfg).eval()
        torch.set_default_dtype(torch.float32)
        r_hf, = decode_rates([(hf_generate, hf)], x, a.new, a.repeats, sync)['wall']
        print(f'transformers batch-1 decode: {r_hf:.1f} tokens/s; ratio llama.py (eager) / transformers '
              f'{r_eager / r_hf:.2f}, (cuda_graph) / transformers {r_ours / r_hf:.2f}')


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--gpu', action='store_true', help='7B-shaped bf16 decode on CUDA vs the bandwidth bound')
    p.add_argument('--hf', action='store_true', help='with --gpu: also time transformers')
    p.add_argument('--dim', type=int, default=768)
    p.add_argument('--layers', type=int, default=12)
    p.add_argument('--heads', type=int, default=12)
    p.add_argument('--kv_heads', type=int, default=12)
    p.add_argument('--ffn', type=int, default=2048)  # Meta's formula for dim 768, multiple_of 256
    p.add_argument('--prefill', type=int, default=128, help='prompt length of the prefill measurement')
    p.add_argument('--prompt', type=int, default=32, help='prompt length of the decode measurements')
    p.add_argument('--new', type=int, default=0, help='tokens generated per decode measurement (0: 16 CPU, 128 GPU)')
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: torch default)')
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.gpu:
        a.new = a.new or 128
        bench_gpu(a)
    else:
        a.new = a.new or 16
        bench_cpu(a)
