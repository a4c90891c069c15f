# Second demo encoder stage (demo.sh runs it after config/demo_encoder.py; ~3-4 min on 2 cores): fine-tune the demo
# encoder on two-source mixtures with a per-class position head, so each sound of a mix is tied to its own position
# (D and E ask "where is the dog" inside a mix), and give BAT the 2 likeliest classes' positions as 2 extra tokens.
#   python train_encoder.py config/demo_encoder.py config/demo_positions.py
#   python bench/probe_encoder.py --ckpt=out/demo/encoder_pos/ckpt.pt     (E answered straight from the new head)
init_from = 'out/demo/encoder/ckpt.pt'  # the first stage (its model_args; the new head starts at ~0)
out_dir = 'out/demo/encoder_pos'
class_positions = True   # the per-class (right, front, up, distance / 2 m) head: spatial_ast.SpatialAST.forward
position_tokens = 2      # BAT reads the 2 likeliest classes' positions as 2 extra tokens (spatial_ast.table)
position_summary = 256   # + an MLP from the standardised time-averaged spectra to every class's position
                         # (spatial_ast.summary): the E eval items read straight off the head, left/right, front/behind,
                         # above/below, distance: 74.6 / 32.3 / 51.4 / 65.5 % without, 79.4 / 49.2 / 56.9 / 67.0 % with
two_source_prob = 0.7    # most items are two sources at their own positions in one room, as D's and E's mixtures
w_position = 30.0
learning_rate = 2e-3     # a fine-tune: below the first stage's 5e-3
max_iters = 1500         # 1.5x the first try; 2000 ran the whole demo past its 20 minutes. At 2000 the demo BAT's E
                         # direction was 60.4-63.6 over 3 seeds against 55.0-59.5 at 1000; at 1500 59.8-61.6
                         # (README, "Seeds and answer formats")
eval_interval = 1000
