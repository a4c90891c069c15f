# A paper-scale IR set. Our choice of sizes (the paper's SoundSpaces scene/position counts are not known):
# 400 + 40 rooms x 64 IRs = 28,160 IRs of 2 s (the official encoder crops IRs to 2 s) = about 14 GB of .npy.
# One GPU: python render.py config/paper_render.py --device=cuda
out_dir = 'out/rirs'
n_train_rooms = 400
n_eval_rooms = 40
irs_per_room = 64  # 8 per octant
ir_seconds = 2.0
max_order = 8
batch_size = 256
