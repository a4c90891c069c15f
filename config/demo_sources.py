# demo: the embedded synthesised bank (25 classes), 2 s clips, 24 train + 6 eval per class -> out/demo/sources
collection = 'synth'
out_dir = 'out/demo/sources'
clips_train = 24
clips_eval = 6
clip_seconds = 2.0
seed = 1337
