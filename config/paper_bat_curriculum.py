# Our 3-stage curriculum on the released data (not a released recipe): stage I on types A+B, II on A-D, III on A-E,
# each from the last, all drawn from stage3-mixup/train.json by question_type (its file holds every type), with
# restarted warmup + cosine and gradient clipping. The released one-stage recipe is config/paper_bat.py.
#   python train_bat.py config/paper_bat.py config/paper_bat_curriculum.py --device=cuda
out_dir = 'out/paper_bat_curriculum'
stages = 3
stage_iters = [20000, 20000, 40000]
lr_schedule = 'cosine'
lr_decay_iters = 0
warmup_iters = 2000
min_lr = 0.0
grad_clip = 1.0
always_save_checkpoint = True
