/** Loads every op family into the registry. */
import "./elementwise.js";
import "./matmul.js";
import "./conv.js";
import "./shape.js";
import "./reduce.js";
import "./norm.js";
import "./resize.js";
import "./attention.js";
import "./composites.js";

export { getOp, ShapeError, type OpDef } from "./registry.js";
