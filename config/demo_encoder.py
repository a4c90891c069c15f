# Tiny Spatial-AST for the CPU demo (<= 4 min on 2 cores): render.py rooms x sources.py synthesised clips.
# python train_encoder.py config/demo_encoder.py
out_dir = 'out/demo/encoder'
sources = 'out/demo/sources/sources.jsonl'
render_dir = 'out/demo/rirs'
device = 'cpu'
clip_seconds = 2.0       # demo clips (the paper: 10 s); 201 feature frames
rir_seconds = 1.0
# model: ViT 192 wide, 4 blocks; 208 frames x 128 mels in 16x16 patches = 13 x 8 = 104 tokens
n_frames = 208
dim = 192
depth = 4
n_heads = 3
drop_path = 0.0          # too few steps for the regularisers of a 100-epoch run
mask_t_prob = 0.0
mask_f_prob = 0.0
time_mask = 40           # 192/1024 of the frames, as the paper's
freq_mask = 24
mixup_prob = 0.0
# few classes: the paper's 1250 x BCE is sized for 355; keep BCE about as strong per class
w_class = 100.0
batch_size = 32
learning_rate = 1e-3
layer_decay = 1.0        # from scratch, all layers are new
warmup_iters = 20
max_iters = 300
eval_interval = 100
eval_items = 192
log_interval = 10
grad_clip = 1.0
