/** Loads every op family into the registry. */
import "./elementwise.js";
import "./activation.js";
import "./matmul.js";
import "./conv.js";
import "./shape.js";
import "./reduce.js";
import "./norm.js";
import "./resize.js";
import "./attention.js";

export { allOps, getOp, ShapeError, type GradArgs, type GradRule, type LowerTarget, type Lowering, type OpDef } from "./registry.js";
