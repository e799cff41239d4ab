# The cleanroom R API, defined in every R run before the analysis: a namespace `cleanroom`
# whose functions read the granted tables (data frames the host built) and publish outputs
# (collected by the host after the script, and then decided by the policy like every output).
local({
  ns <- new.env(parent = baseenv())
  tables <- new.env(parent = emptyenv())
  outputs <- list()
  exported <- c("tables", "table", "publish_table", "publish_json", "publish_file", "log")

  one_name <- function(name, what) {
    if (!is.character(name) || length(name) != 1L || is.na(name) || !nzchar(name))
      stop(what, ": the name must be one non-empty string", call. = FALSE)
    name
  }
  publish <- function(kind, name, value) {
    outputs[[length(outputs) + 1L]] <<- list(kind, name, value)
    invisible(NULL)
  }
  json_string <- function(s) {
    s <- gsub("\\", "\\\\", s, fixed = TRUE)
    s <- gsub("\"", "\\\"", s, fixed = TRUE)
    s <- gsub("\n", "\\n", s, fixed = TRUE)
    s <- gsub("\r", "\\r", s, fixed = TRUE)
    s <- gsub("\t", "\\t", s, fixed = TRUE)
    paste0("\"", s, "\"")
  }
  to_json <- function(x) {
    if (is.null(x)) return("null")
    if (is.list(x)) {
      parts <- vapply(x, to_json, "")
      n <- names(x)
      if (!is.null(n) && all(nzchar(n)))
        return(paste0("{", paste0(json_string(n), ":", parts, collapse = ","), "}"))
      return(paste0("[", paste(parts, collapse = ","), "]"))
    }
    if (is.factor(x)) x <- as.character(x)
    if (inherits(x, "Date") || inherits(x, "POSIXt")) x <- format(x)
    vals <- if (is.character(x)) ifelse(is.na(x), "null", json_string(x))
      else if (is.logical(x)) ifelse(is.na(x), "null", ifelse(x, "true", "false"))
      else if (is.integer(x)) ifelse(is.na(x), "null", as.character(x))
      else if (is.numeric(x)) ifelse(is.finite(x), sprintf("%.17g", x), "null")
      else stop("publish_json: cannot encode a value of class ", class(x)[1L], call. = FALSE)
    n <- names(x)
    if (!is.null(n) && all(nzchar(n)))
      return(paste0("{", paste0(json_string(n), ":", vals, collapse = ","), "}"))
    if (length(x) == 1L) vals else paste0("[", paste(vals, collapse = ","), "]")
  }

  ns$tables <- function() sort(ls(tables))
  ns$table <- function(name) {
    one_name(name, "table")
    if (!exists(name, envir = tables, inherits = FALSE))
      stop(sprintf("no granted table %s (granted: %s)", name,
                   paste(sort(ls(tables)), collapse = ", ")), call. = FALSE)
    get(name, envir = tables, inherits = FALSE)
  }
  ns$publish_table <- function(name, df, counts = character()) {
    one_name(name, "publish_table")
    df <- as.data.frame(df, stringsAsFactors = FALSE)
    counts <- as.character(counts)
    unknown <- setdiff(counts, names(df))
    if (length(unknown))
      stop("publish_table: counts names columns the table does not have: ",
           paste(unknown, collapse = ", "), call. = FALSE)
    cols <- lapply(df, function(col) {
      if (is.factor(col)) list("character", as.character(col))
      else if (inherits(col, "Date")) list("date", as.numeric(col))
      else if (inherits(col, "POSIXt")) list("datetime", as.numeric(as.POSIXct(col)))
      else if (is.logical(col)) list("logical", col)
      else if (is.integer(col)) list("integer", col)
      else if (is.numeric(col)) list("double", as.double(col))
      else if (is.character(col)) list("character", col)
      else stop("publish_table: column of class ", class(col)[1L], " is not supported", call. = FALSE)
    })
    publish("table", name, list(names(df), vapply(cols, `[[`, "", 1L), lapply(cols, `[[`, 2L), counts))
  }
  ns$publish_json <- function(name, value) {
    one_name(name, "publish_json")
    publish("json", name, to_json(value))
  }
  ns$publish_file <- function(name, bytes) {
    one_name(name, "publish_file")
    if (is.character(bytes)) bytes <- charToRaw(paste(bytes, collapse = "\n"))
    if (!is.raw(bytes)) stop("publish_file: bytes must be a raw or character vector", call. = FALSE)
    publish("file", name, bytes)
  }
  ns$log <- function(...) {
    cat(paste0(..., collapse = ""), "\n", sep = "")
    invisible(NULL)
  }
  # For the host: adopt a table it built (plain vectors, their types), and the outputs.
  ns$.adopt <- function(name, cols, types) {
    for (i in seq_along(cols)) {
      cols[[i]] <- switch(types[[i]],
        factor = factor(cols[[i]]),
        date = structure(cols[[i]], class = "Date"),
        datetime = structure(cols[[i]], class = c("POSIXct", "POSIXt"), tzone = "UTC"),
        cols[[i]])
    }
    df <- as.data.frame(cols, stringsAsFactors = FALSE, optional = TRUE)
    names(df) <- names(cols)
    assign(name, df, envir = tables)
  }
  ns$.outputs <- function() outputs

  info <- new.env(parent = baseenv())
  info$spec <- c(name = "cleanroom", version = "0.1.0")
  info$exports <- new.env(parent = baseenv())
  for (n in exported) assign(n, n, envir = info$exports)
  info$imports <- list(base = TRUE)
  info$lazydata <- new.env(parent = baseenv())
  info$path <- "/usr/lib/R/library/cleanroom"
  info$dynlibs <- character()
  info$S3methods <- matrix(character(), 0L, 4L)
  assign(".__NAMESPACE__.", info, envir = ns)
  .Internal(registerNamespace("cleanroom", ns))
  invisible(NULL)
})
