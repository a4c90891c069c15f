# Tiny BAT for the CPU demo (encoder-token cache ~2-4 min + 600 iters x 0.3 s on 2 cores):
# python train_bat.py config/demo_bat.py
# the frozen demo encoder's tokens (3 + N, its dim) -> a 2-layer Q-Former (16 queries) -> a from-scratch 3-layer LLaMA
out_dir = 'out/demo/bat'
qa_dir = 'out/demo/qa'
max_items_per_type = 300  # the encoder-token cache costs ~20-70 ms per distinct clip pair on a CPU: a 2700-item subset
encoder_ckpt = 'out/demo/encoder/ckpt.pt'
device = 'cpu'
clip_seconds = 2.0
encode_batch_size = 32
llm = 'scratch'
vocab_size = 1024
llm_dim = 128
llm_layers = 3
llm_heads = 4
qformer_layers = 2
n_query = 16
qformer_dim = 192
qformer_heads = 4
qformer_ffn = 768
qformer_dropout = 0.0
stages = 3
stage_iters = [250, 150, 200]  # I (A+B), II (A-D), III (A-E); longer runs overfit the 2700-item subset
batch_size = 32
learning_rate = 1e-3     # a from-scratch tiny LLM wants far more than LoRA's 1e-4
min_lr = 1e-4
warmup_iters = 20
weight_decay = 0.01
beta2 = 0.99
eval_interval = 100
eval_iters = 4
log_interval = 25
