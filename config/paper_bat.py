# The released BAT recipe (SLAM-LLM seld_spatialsoundqa) on GPUs: Spatial-AST (paper size) frozen -> Q-Former
# (8 layers, 64 queries, hidden 768) -> LLaMA-2-7B frozen + LoRA (r 8, alpha 32, dropout 0.05 on q, v).
#   torchrun --standalone --nproc_per_node=8 train_bat.py config/paper_bat.py \
#       --llm=/path/to/Llama-2-7b-hf --encoder_ckpt=out/encoder/ckpt.pt --qa_dir=out/qa
#   python eval.py --ckpt=out/bat/ckpt.pt --beams=4 --device=cuda
# Official QA files instead of make_qa.py's: --train_file=closed-end/stage3-mixup/train.json
#   --audio_root=SpatialSoundQA/AudioSet --reverb_root=mp3d_reverb/binaural (the curriculum selects by question_type)
out_dir = 'out/bat'
qa_dir = 'out/qa'
encoder_ckpt = 'out/encoder/ckpt.pt'
llm = 'models/Llama-2-7b-hf'   # a local HF-layout directory (config.json + safetensors + tokenizer.model)
clip_seconds = 10.0            # the paper's clips
lora_rank = 8                  # the released LoRA settings
lora_alpha = 32
lora_dropout = 0.05
lora_targets = 'wq,wv'
projector = 'qformer'          # QFormerArgs defaults: 8 layers, 64 queries, 768 hidden, 12 heads, FFN 3072
stages = 3                     # the paper's curriculum
stage_iters = [20000, 20000, 40000]  # our split of the released 200k steps (5 epochs x batch 8) over 3 stages
batch_size = 8                 # per GPU (released: 8)
gradient_accumulation_steps = 1
learning_rate = 1e-4           # released: AdamW 1e-4, weight decay 0
min_lr = 0.0                   # released: decays to 0
warmup_iters = 2000            # a tenth of the shorter stages
weight_decay = 0.0
max_answer_tokens = 96         # released max_words
dtype = 'bfloat16'             # half the memory of fp32 for the frozen 7B
fsdp = False                   # True: shard the 7B over the torchrun processes (per block, bf16)
eval_interval = 2000
log_interval = 50
