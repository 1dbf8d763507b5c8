"""Every config key, declared once, in Detectron2's schema plus OPMask's own keys.

Only ``build_*(cfg)`` functions read these; modules take explicit arguments.
"""

from fvcore.common.config import CfgNode as CN

_C = CN()
_C.VERSION = 2  # config schema version (Detectron2's is 2)

# ---------------------------------------------------------------------------- model
_C.MODEL = CN()
_C.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"  # one detector class serves baseline and OPMask
_C.MODEL.DEVICE = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1"
_C.MODEL.WEIGHTS = ""  # ours, torchvision ResNet, Detectron2 (.pth/.pkl, full or backbone), Caffe2
_C.MODEL.MASK_ON = True  # predict instance masks
_C.MODEL.PIXEL_MEAN = [103.530, 116.280, 123.675]  # per-channel mean in INPUT.FORMAT order, 0-255
_C.MODEL.PIXEL_STD = [1.0, 1.0, 1.0]  # per-channel std (1.0 for Caffe2 MSRA weights)
_C.MODEL.CHANNELS_LAST = False  # channels-last memory format for backbone and heads (GPU speed)
_C.MODEL.COMPILE = False  # torch.compile the backbone and the conv heads (opt-in; first steps slow)

_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"  # the only backbone builder we ship
_C.MODEL.BACKBONE.FREEZE_AT = 2  # 0: train all; 1: freeze stem; k>=2: also freeze res2..res{k}

_C.MODEL.RESNETS = CN()
_C.MODEL.RESNETS.DEPTH = 50  # 18, 34, 50 or 101
_C.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]  # stages fed to the FPN
_C.MODEL.RESNETS.NORM = "FrozenBN"  # FrozenBN, BN, SyncBN, GN
_C.MODEL.RESNETS.STRIDE_IN_1X1 = (
    True  # MSRA/Caffe2 weights stride in the 1x1 conv; torchvision's in 3x3
)

_C.MODEL.FPN = CN()
_C.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]  # backbone stages used by the FPN
_C.MODEL.FPN.OUT_CHANNELS = 256  # FPN width (the mask RoI feature width)
_C.MODEL.FPN.NORM = ""  # norm after the FPN's lateral and output convs: "", BN, SyncBN, GN

_C.MODEL.ANCHOR_GENERATOR = CN()
_C.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64], [128], [256], [512]]  # anchor sizes per level P2-P6
_C.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]  # height/width ratios, all levels
_C.MODEL.ANCHOR_GENERATOR.OFFSET = 0.0  # first anchor centre, in strides from the corner, [0, 1)

_C.MODEL.PROPOSAL_GENERATOR = CN()
_C.MODEL.PROPOSAL_GENERATOR.MIN_SIZE = 0  # proposals need width and height > this (input px)

_C.MODEL.RPN = CN()
_C.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]  # FPN levels the RPN sees
_C.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 256  # anchors sampled per image for the RPN loss
_C.MODEL.RPN.POSITIVE_FRACTION = 0.5  # target fraction of positive anchors
_C.MODEL.RPN.IOU_THRESHOLDS = [0.3, 0.7]  # below: negative; above: positive
_C.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 2000  # proposals per level before NMS (train)
_C.MODEL.RPN.PRE_NMS_TOPK_TEST = 1000  # proposals per level before NMS (test)
_C.MODEL.RPN.POST_NMS_TOPK_TRAIN = 1000  # proposals per image after NMS (train)
_C.MODEL.RPN.POST_NMS_TOPK_TEST = 1000  # proposals per image after NMS (test)
_C.MODEL.RPN.NMS_THRESH = 0.7  # RPN NMS IoU threshold
_C.MODEL.RPN.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)  # (wx, wy, ww, wh) of the anchor deltas
_C.MODEL.RPN.SMOOTH_L1_BETA = 0.0  # smooth-L1 beta of the RPN box loss; 0: L1
_C.MODEL.RPN.LOSS_WEIGHT = 1.0  # multiplies loss_rpn_cls and loss_rpn_loc
_C.MODEL.RPN.BBOX_REG_LOSS_WEIGHT = 1.0  # further multiplies loss_rpn_loc

_C.MODEL.ROI_HEADS = CN()
_C.MODEL.ROI_HEADS.NAME = "StandardROIHeads"  # kept for schema; FPNCamRoiHeads is an alias
_C.MODEL.ROI_HEADS.NUM_CLASSES = 80  # foreground classes K (labels 1..K, 0 is background)
_C.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]  # FPN levels the RoI poolers see
_C.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512  # RoIs sampled per image for the box/mask losses
_C.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.25  # target fraction of foreground RoIs
_C.MODEL.ROI_HEADS.IOU_THRESHOLDS = [0.5]  # IoU at or above: foreground
_C.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.05  # drop detections below this score
_C.MODEL.ROI_HEADS.NMS_THRESH_TEST = 0.5  # per-class NMS IoU threshold at test time

_C.MODEL.ROI_BOX_HEAD = CN()
_C.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"  # FastRCNNConvFCHead (baseline) or CAMBoxHead
_C.MODEL.ROI_BOX_HEAD.NUM_CONV = 0  # 3x3 convs on the pooled RoI features
_C.MODEL.ROI_BOX_HEAD.CONV_DIM = 256  # widest conv; CAMBoxHead doubles from the FPN width up to it
_C.MODEL.ROI_BOX_HEAD.NUM_FC = 2  # fully connected layers (baseline 2, CAMBoxHead 0)
_C.MODEL.ROI_BOX_HEAD.FC_DIM = 1024  # width of each FC layer
_C.MODEL.ROI_BOX_HEAD.NORM = ""  # norm after each conv: "", BN, SyncBN, GN
_C.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7  # box RoI feature size
_C.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 0  # RoIAlign sampling points (0: adaptive)
_C.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlignV2"  # ROIAlignV2 (aligned=True) or ROIAlign
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # box coder weights
_C.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA = 0.0  # 0: L1 loss for box regression (Detectron2)
_C.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = False  # only False is supported

_C.MODEL.ROI_MASK_HEAD = CN()
_C.MODEL.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"  # or CAMMaskHead (uses the OMP)
_C.MODEL.ROI_MASK_HEAD.NUM_CONV = 4  # 3x3 convs (baseline 4, OPMask 7)
_C.MODEL.ROI_MASK_HEAD.CONV_DIM = 256  # conv width
_C.MODEL.ROI_MASK_HEAD.NUM_CONV_UP = 1  # 2x2 stride-2 deconvs before the predictor
_C.MODEL.ROI_MASK_HEAD.NORM = ""  # norm after each conv: "", BN, SyncBN, GN
_C.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14  # mask RoI feature (and OMP) size
_C.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO = 0  # RoIAlign sampling points (0: adaptive)
_C.MODEL.ROI_MASK_HEAD.POOLER_TYPE = "ROIAlignV2"  # ROIAlignV2 (aligned=True) or ROIAlign
_C.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK = True  # partially supervised: one mask channel

# ---------------------------------------------------------------------------- input
_C.INPUT = CN()
_C.INPUT.MIN_SIZE_TRAIN = (800,)  # short-side sizes for training
_C.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"  # "choice" of the sizes, or uniform "range" (2 sizes)
_C.INPUT.MAX_SIZE_TRAIN = 1333  # cap on the long side (train)
_C.INPUT.MIN_SIZE_TEST = 800  # short side at test time
_C.INPUT.MAX_SIZE_TEST = 1333  # cap on the long side (test)
_C.INPUT.FORMAT = "BGR"  # channel order the model sees: BGR (Caffe2 weights) or RGB
_C.INPUT.RANDOM_FLIP = "horizontal"  # "horizontal" or "none"

# ---------------------------------------------------------------------------- data
_C.DATASETS = CN()
_C.DATASETS.TRAIN = ()  # dataset names or "ANNOTATIONS.json:IMAGE_DIR" specs (datasets/README.md)
_C.DATASETS.TEST = ()  # evaluated datasets, same forms
_C.DATASETS.CACHE_DIR = ""  # dataset index cache folder ("": $OPMASK_CACHE, else ~/.cache/opmask)

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4  # loader processes per training process
_C.DATALOADER.ASPECT_RATIO_GROUPING = True  # batch landscape and portrait images separately
_C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True  # drop training images without usable instances
# bytes: loader workers give blocks >= this back to the system on free (glibc; 0: glibc's own
# growing threshold, under which each worker's heap keeps image buffers; utils/malloc.py)
_C.DATALOADER.WORKER_MMAP_THRESHOLD = 1 << 20

# ---------------------------------------------------------------------------- solver
_C.SOLVER = CN()
_C.SOLVER.MAX_ITER = 40000  # training iterations
_C.SOLVER.OPTIMIZER = "SGD"  # SGD (the paper) or AdamW (faster from scratch, used by CPU configs)
_C.SOLVER.BASE_LR = 0.001  # learning rate at IMS_PER_BATCH (see README: linear scaling)
_C.SOLVER.MOMENTUM = 0.9  # SGD momentum
_C.SOLVER.NESTEROV = False  # Nesterov momentum
_C.SOLVER.WEIGHT_DECAY = 0.0001  # L2 weight decay
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0  # weight decay of norm layers' scale and shift
_C.SOLVER.GAMMA = 0.1  # LR factor at each step
_C.SOLVER.STEPS = (30000,)  # iterations at which the LR is multiplied by GAMMA
_C.SOLVER.WARMUP_FACTOR = 0.001  # LR factor at iteration 0
_C.SOLVER.WARMUP_ITERS = 1000  # warmup length
_C.SOLVER.WARMUP_METHOD = "linear"  # "linear" or "constant"
_C.SOLVER.CHECKPOINT_PERIOD = 5000  # save every N iterations
_C.SOLVER.MAX_TO_KEEP = 0  # periodic checkpoints kept (0: all); the resume source is never deleted
_C.SOLVER.IMS_PER_BATCH = 16  # global batch size (all processes together)
_C.SOLVER.CLIP_GRADIENTS = CN()
_C.SOLVER.CLIP_GRADIENTS.ENABLED = False  # clip gradients before each step
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"  # "value" (element), "norm" (parameter), "full_model"
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0  # the clip threshold
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0  # p of the norm for "norm" and "full_model"
_C.SOLVER.AMP = CN()
_C.SOLVER.AMP.ENABLED = False  # automatic mixed precision
_C.SOLVER.AMP.DTYPE = "float16"  # float16 (with GradScaler) or bfloat16
_C.SOLVER.TF32 = True  # allow TF32 tensor cores for fp32 matmul/conv on CUDA (Ampere and newer)

# ---------------------------------------------------------------------------- test
_C.TEST = CN()
_C.TEST.EVAL_PERIOD = 0  # evaluate every N iterations (0: only at the end)
_C.TEST.DETECTIONS_PER_IMAGE = 100  # detections kept per image
_C.TEST.EVALUATOR = "pycocotools"  # COCOeval backend: pycocotools or faster_coco_eval
_C.TEST.EXPECTED_RESULTS = []  # unused; kept for Detectron2 config compatibility

# ---------------------------------------------------------------------------- misc
_C.OUTPUT_DIR = "./output"  # root of run folders: OUTPUT_DIR/EXP.FOLDER_NAME/{dataset}_{exp-id}
_C.SEED = -1  # global seed (negative: drawn at random and written to config.yaml)
_C.CUDNN_BENCHMARK = False  # cudnn autotuner (faster convs at fixed input sizes; resume-safe)
_C.VIS_PERIOD = 0  # every N iterations write OMP | mask | GT images to TensorBoard (0: never)

# ---------------------------------------------------------------------------- OPMask
_C.EXP = CN()
_C.EXP.PS = "voc"  # mask-supervised split: voc, nvoc, 40_classes_inc, "" (all), dataset (its own)
_C.EXP.STRONG_CATEGORY_IDS = []  # explicit mask-supervised category ids (overrides EXP.PS)
_C.EXP.TRAINER = "General"  # kept for compatibility with the original configs
_C.EXP.PRINT_PERIOD = 20  # log every N iterations
_C.EXP.FOLDER_NAME = "OPMask"  # run folders live in OUTPUT_DIR/FOLDER_NAME
_C.EXP.VIS_ROIS = 4  # RoIs shown per VIS_PERIOD image
_C.EXP.VIS_PREDICTIONS = 4  # test images drawn with predictions at each evaluation (0: off)
_C.EXP.HPARAMS = []  # keys recorded as TensorBoard HParams besides the key ones (sweep: varied)
