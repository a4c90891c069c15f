# CPU demo of render.py (<= 1 min on 2 cores): 2400 train IRs in 60 rooms, 320 eval IRs in 8 other rooms
# (many rooms and positions: with a few hundred IRs the encoder memorises positions instead of learning cues).
# python render.py config/demo_render.py
out_dir = 'out/demo/rirs'
n_train_rooms = 60
n_eval_rooms = 8
irs_per_room = 40  # 5 per octant
ir_seconds = 0.5  # short IRs for 2 s demo clips (the tail past 0.5 s is below -30 dB for RT60 <= 1 s)
rt60_max = 1.0
device = 'cpu'
