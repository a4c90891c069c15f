# Spatial-AST at the paper's size and recipe (the official 2M script): ViT-B from the AudioMAE self-supervised
# checkpoint, 10 s clips, effective batch 256, lr 1e-3, 100 "epochs" of 190k samples, 10 of warm-up.
# torchrun --standalone --nproc_per_node=4 train_encoder.py config/paper_encoder.py
#   (1 GPU: add --gradient_accumulation_steps=4 to keep the batch at 256)
out_dir = 'out/paper_encoder'
sources = 'data/audioset/sources.jsonl'   # AudioSet clips as a sources JSONL (sources.py); labels = the 355 subset
render_dir = 'data/mp3d_reverb'           # the official IR release (train/eval_reverberation.json) or render.py output
init_from = 'pretrained/audiomae_vitb_pretrained.pth'  # AudioMAE AS-2M pretrained ViT-B (partial load, reported)
device = 'cuda'
dtype = 'bfloat16'       # the official run is fp32; bf16 is ~3x faster with the same recipe
compile = True           # a long run repays the compile time
batch_size = 64          # per GPU; x 4 GPUs = 256
eval_interval = 3710     # every 5 epochs of 742 steps
eval_items = 17148       # the size of the official eval log; clips are cycled if the eval split is smaller
eval_batch_size = 128
log_interval = 50
