# Spatial-AST as the official scripts/finetune-2m.sh trains it: config/paper_encoder.py's recipe on the unbalanced
# AudioSet-2M, each epoch 10,000 clips drawn by the release's weights CSV without replacement, 100 epochs with 10 of
# warmup. Sources (every clip's weight from metadata/weights/unbalanced_weight.csv, in unbalanced.json's order; clips
# YouTube has lost are skipped, --check=False skips the load test of 2M files):
#   python sources.py --collection=audioset --out_dir=out/audioset_2m --audio_root=data/SpatialAudio/SpatialSoundQA/AudioSet \
#       --path=data/SpatialAudio/SpatialSoundQA/AudioSet/metadata/unbalanced.json,data/SpatialAudio/SpatialSoundQA/AudioSet/metadata/eval.json \
#       --class_list=data/SpatialAudio/SpatialSoundQA/AudioSet/metadata/class_labels_indices_subset.csv \
#       --weight_csv=data/SpatialAudio/SpatialSoundQA/AudioSet/metadata/weights/unbalanced_weight.csv
#   torchrun --standalone --nproc_per_node=4 train_encoder.py config/paper_encoder.py config/paper_encoder_2m.py
out_dir = 'out/paper_encoder_2m'         # config/paper_bat.py: --encoder_ckpt=out/paper_encoder_2m/ckpt.pt
sources = 'out/audioset_2m/sources.jsonl'
sampler = 'weighted'
epoch_len = 10000        # finetune-2m.sh's --epoch_len (the first release of the code used 190000)
epochs = 100
warmup_epochs = 10
eval_interval = 390      # every 10 epochs of 39 iterations (the official evaluates every epoch from epoch 20)
