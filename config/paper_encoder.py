# Spatial-AST as the official scripts/finetune-20k.sh trains it: ViT-B/16 from the AudioMAE self-supervised checkpoint
# on the balanced AudioSet (355 classes, every clip once an epoch), 4 GPUs x 64 = 256 a step, lr 1e-3 (blr 1e-3),
# 50 epochs with 5 of warmup then cosine to 1e-6, 10 s clips zero-padded, roll-mag, mixup 0.5, 2-D patch masking
# 0.25 / 0.25, SpecAugment 48 / 192 (one mask per batch), a random IR per item cut to 2 s, losses 1250 / 1 / 2,
# layer decay 0.75, weight decay 5e-4, no clipping, fp32. Files as the release ships them (data/SpatialAudio =
# the Hugging Face dataset zhisheng01/SpatialAudio, mp3d_reverb.zip unpacked in place):
#   python sources.py --collection=audioset --out_dir=out/audioset_20k --audio_root=data/SpatialAudio/SpatialSoundQA/AudioSet \
#       --path=data/SpatialAudio/SpatialSoundQA/AudioSet/metadata/balanced.json,data/SpatialAudio/SpatialSoundQA/AudioSet/metadata/eval.json \
#       --class_list=data/SpatialAudio/SpatialSoundQA/AudioSet/metadata/class_labels_indices_subset.csv
#   torchrun --standalone --nproc_per_node=4 train_encoder.py config/paper_encoder.py
#   (1 GPU: add --gradient_accumulation_steps=4 to keep 256 a step)
out_dir = 'out/paper_encoder'            # config/paper_bat.py reads out/paper_encoder/ckpt.pt
sources = 'out/audioset_20k/sources.jsonl'  # with classes.txt beside it: the head follows the CSV's row order
render_dir = 'data/SpatialAudio/SpatialSoundQA/mp3d_reverb'  # {train,eval}_reverberation.json + binaural/
init_from = 'pretrained/audiomae_pretrained.pth'  # AudioMAE AS-2M pretrained ViT-B (partial load, reported)
device = 'cuda'
dtype = 'float32'        # the official run is fp32 (its autocast is commented out); bfloat16 is ~3x faster
compile = True
clip_seconds = 10.0
clip_pad = 'zero'
rir_seconds = 2.0
roll_mag = True
mixup_prob = 0.5
mixup_alpha = 10.0
spec_masks = 'batch'
# model: ModelArgs defaults (ViT-B/16, 1024 x 128 input, drop-path 0.1, masking 0.25 / 0.25, SpecAugment 48 / 192)
w_class = 1250.0
w_distance = 1.0
w_direction = 2.0
batch_size = 64          # per GPU; x 4 GPUs = 256
gradient_accumulation_steps = 1
learning_rate = 1e-3
min_lr = 1e-6
weight_decay = 5e-4
layer_decay = 0.75
grad_clip = 0.0
sampler = 'shuffle'      # DistributedSampler: each epoch every training clip once
epoch_len = 0            # = the number of training clips
epochs = 50
warmup_epochs = 5
eval_interval = 0        # 0 = every epoch (the official evaluates after each)
eval_items = 17148       # the size of the official eval log; clips are cycled if the eval split is smaller
eval_batch_size = 128
log_interval = 50
