# Score the demo BAT: python eval.py config/demo_eval.py
ckpt = 'out/demo/bat/ckpt.pt'
out_dir = 'out/demo/eval'
device = 'cpu'
batch_size = 64          # greedy answers are batched with a KV cache
max_new_tokens = 16      # the longest demo answer fits
