# The released BAT recipe (SLAM-LLM seld_spatialsoundqa) on GPUs: Spatial-AST (paper size) frozen -> Q-Former
# (8 layers, 64 queries, hidden 768) -> LLaMA-2-7B frozen + LoRA (r 8, alpha 32, dropout 0.05 on q, v).
#   torchrun --standalone --nproc_per_node=8 train_bat.py config/paper_bat.py \
#       --llm=/path/to/Llama-2-7b-hf --encoder_ckpt=out/encoder/ckpt.pt --qa_dir=out/qa
#   python eval.py --ckpt=out/bat/ckpt.pt --beams=4 --device=cuda     (or --eval_file=<official eval-*.json>,...)
# Official data instead of make_qa.py's: --train_file=closed-end/stage3-mixup/train.json
#   --audio_root=SpatialSoundQA/AudioSet --reverb_root=mp3d_reverb/binaural; stage III's file holds types A-E, so the
#   curriculum selects from it by question_type (one-stage: --stages=1).
# Expected (paper Table 13, "BAT (SLAM-LLM)" row, which this recipe follows; mAP there used OpenAI embeddings):
#   A|C mAP 25.08 | 8.27, B|D DoA 72.73 | 35.07, B|D DER 34.10 | 52.82, E direction 69.84, distance 80.36, avg 75.10
#   (the paper's own BAT: 26.34 | 9.89, 75.54 | 37.65, 29.16 | 47.90, 69.77, 84.01, 76.89; Random: 0.61 | 0.59,
#   12.57 | 12.41, 67.33 | 67.46, 50, 50, 50). Not reproduced here (no GPU time): these are the targets.
out_dir = 'out/bat'
qa_dir = 'out/qa'
encoder_ckpt = 'out/encoder/ckpt.pt'
llm = 'models/Llama-2-7b-hf'   # a local HF-layout directory (meta-llama/Llama-2-7b-hf downloaded by you) (config.json + safetensors + tokenizer.model)
clip_seconds = 10.0
lora_rank = 8
lora_alpha = 32
lora_dropout = 0.05
lora_targets = 'wq,wv'
projector = 'qformer'    # QFormerArgs defaults: 8 layers, 64 queries, 768 hidden, 12 heads, FFN 3072
stages = 3
stage_iters = [20000, 20000, 40000]  # the released recipe: 200k steps (5 epochs x batch 8) on stage III alone
batch_size = 8           # per GPU (released: 8)
gradient_accumulation_steps = 1
learning_rate = 1e-4     # released: AdamW 1e-4, weight decay 0, 20k warmup then linear decay
min_lr = 0.0
warmup_iters = 2000
weight_decay = 0.0
max_answer_tokens = 96
dtype = 'bfloat16'
fsdp = False             # True: shard the 7B over the torchrun processes (per-block, bf16)
eval_interval = 2000
log_interval = 50
