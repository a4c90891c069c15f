# demo: the embedded synthesised bank (25 classes), 2 s clips, 10 train + 4 eval per class -> out/demo/sources
collection = 'synth'
out_dir = 'out/demo/sources'
clips_train = 10
clips_eval = 4
clip_seconds = 2.0
seed = 1337
