# Spatial-AST at the paper's size and recipe (reference/bat-facts.md §3; the 2M script): ViT-B from the AudioMAE
# self-supervised checkpoint, 10 s clips, effective batch 256, lr 1e-3, 100 "epochs" of 190k samples, 10 warm-up.
# torchrun --standalone --nproc_per_node=4 train_encoder.py config/paper_encoder.py
#   (1 GPU: add --gradient_accumulation_steps=4 to keep the batch at 256)
out_dir = 'out/paper_encoder'
sources = 'data/audioset/sources.jsonl'   # AudioSet clips as a sources JSONL (sources.py); labels = the 355 subset
render_dir = 'data/mp3d_reverb'           # the official IR release (train/eval_reverberation.json) or render.py output
init_from = 'pretrained/audiomae_vitb_pretrained.pth'  # AudioMAE AS-2M pretrained ViT-B (partial load, reported)
device = 'cuda'
dtype = 'bfloat16'       # the official run is fp32 (autocast commented out); bf16 is ~3x faster with the same recipe
compile = True
clip_seconds = 10.0
rir_seconds = 2.0
# model: ModelArgs defaults (ViT-B/16, 1024 x 128 input, drop-path 0.1, masking 0.25/0.25, SpecAugment 48/192)
mixup_prob = 0.5
w_class = 1250.0
w_distance = 1.0
w_direction = 2.0
batch_size = 64          # per GPU; x 4 GPUs = 256
gradient_accumulation_steps = 1
learning_rate = 1e-3
min_lr = 1e-6
weight_decay = 5e-4
layer_decay = 0.75
_iters_per_epoch = 190000 // 256  # 742: the official --epoch_len (190k samples) at batch 256
warmup_iters = 10 * _iters_per_epoch
max_iters = 100 * _iters_per_epoch
eval_interval = 5 * _iters_per_epoch
eval_items = 17148       # the size of the official eval log; clips are cycled if the eval split is smaller
eval_batch_size = 128
log_interval = 50
