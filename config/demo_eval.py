# Score the demo BAT (<= 1.5 min on 2 cores): python eval.py config/demo_eval.py
ckpt = 'out/demo/bat/ckpt.pt'
out_dir = 'out/demo/eval'
device = 'cpu'
batch_size = 64
max_new_tokens = 16
